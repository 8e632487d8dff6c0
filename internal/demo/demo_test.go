package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole `make demo` story with freshly built binaries and
// checks that each part happened.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "ssh-keygen", "ssh", "/usr/sbin/sshd"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found, and CI=true", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the demo's sshd part needs root, and CI=true")
		}
		t.Skip("the demo's sshd part needs root")
	}
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin+"/", "github.com/devid-ssh/devid/cmd/...").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := Run(ctx, Options{Bin: bin, Out: &out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Root fingerprint:",
		"imported: 2 added",
		"registered laptop-alice",
		"SSH host certificate: key ID \"urn:ek:sha256:",
		"collection:sre-laptops",
		"mdm-export.csv:2: ek:",
		"logged in to",
		"is now quarantined",
		"Permission denied (publickey)",
		"revoked by file",
		"is quarantined\n(exit status 1)",
		"device.quarantine",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's story lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}
