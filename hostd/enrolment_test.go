package hostd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/hostd"
)

// TestEnrolmentConfig: devid-hostd's and devid-agent's "enrolment" object,
// checked field by field, with the file and line of a misspelt key.
func TestEnrolmentConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	const base = `"version": 1, "caUrl": "https://ca.example.com:8443", "root": "/etc/devid/root_ca.crt", "stateDir": "/tmp/x"`
	bases := map[string]string{"hostd.json": base, "agent.json": base + `, "socket": "/tmp/x/s"`}
	load := map[string]func(string) error{
		"hostd.json": func(p string) error { _, err := hostd.LoadConfig(p); return err },
		"agent.json": func(p string) error { _, err := agentd.LoadConfig(p, func(string) string { return "" }); return err },
	}
	c, err := hostd.LoadConfig(write("hostd.json", `{"version": 1, "caUrl": "https://ca.example.com:8443", "root": "/r", "enrolment": {"tokenFile": "/etc/devid/enrolment-token", "name": "web-1"}}`))
	if err != nil || c.Enrolment.TokenFile != "/etc/devid/enrolment-token" || c.Enrolment.Name != "web-1" {
		t.Fatalf("hostd enrolment: %+v, %v", c, err)
	}
	a, err := agentd.LoadConfig(write("agent.json", "{"+bases["agent.json"]+`, "enrolment": {"tokenFile": "/etc/devid/enrolment-token"}}`), func(string) string { return "" })
	if err != nil || a.Enrolment.TokenFile != "/etc/devid/enrolment-token" {
		t.Fatalf("agent enrolment: %+v, %v", a, err)
	}
	for file, f := range load {
		for in, want := range map[string]string{
			`"enrolment": {"tokenFile": "token"}`:                                    `enrolment.tokenFile "token": want an absolute path`,
			`"enrolment": {"name": "web-1"}`:                                         `enrolment.name "web-1" without enrolment.tokenFile`,
			`"enrolment": {"tokenFile": "/t", "name": "web 1"}`:                      `enrolment.name "web 1": not a device name`,
			"\"enrolment\": {\n\"tokenFile\": \"/t\", \"token\": \"devid-enrol-x\"}": file + `:2: unknown field "token"`,
		} {
			err := f(write(file, "{"+bases[file]+", "+in+"}"))
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), file) {
				t.Errorf("%s: %s: err = %v, want %q", file, in, err, want)
			}
		}
	}
}
