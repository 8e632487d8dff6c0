package clitest

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/cmd/devid-ca/cacli"
	"github.com/devid-ssh/devid/cmd/devid-hostd/hostdcli"
	"github.com/devid-ssh/devid/cmd/devid-principals/principalscli"
	"github.com/devid-ssh/devid/cmd/devid/devidcli"
	"github.com/devid-ssh/devid/internal/command"
)

// TestEveryJSONFlagIsScripted: every command of devid, devid-ca,
// devid-hostd and devid-principals whose --help lists --json is run with
// --json in a script, its standard output then copied for jq to read. A
// listed --json that prints no JSON cannot go unnoticed.
func TestEveryJSONFlagIsScripted(t *testing.T) {
	var scripts strings.Builder
	files, _ := filepath.Glob("../../cmd/*/testdata/script/*.txtar")
	if len(files) < 5 {
		t.Fatalf("found %d scripts under cmd/*/testdata/script: have they moved?", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		scripts.Write(b)
	}
	mains := map[string]func([]string, *command.Env) int{
		"devid": devidcli.Main, "devid-ca": cacli.Main, "devid-hostd": hostdcli.Main, "devid-principals": principalscli.Main,
	}
	found := 0
	for prog, main := range mains {
		var leaves [][]string
		if prog == "devid-principals" {
			// Its bare form is sshd's helper; check and explain are its
			// commands.
			leaves = [][]string{{"check"}, {"explain"}}
		} else {
			leaves = commands(t, main, nil)
		}
		for _, path := range leaves {
			help := runHelp(main, append(append([]string{}, path...), "--help"))
			if !regexp.MustCompile(`(?m)^\s+-json\b`).MatchString(help) {
				continue
			}
			found++
			cmd := strings.Join(append([]string{prog}, path...), " ")
			re := regexp.MustCompile(`(?m)^exec ` + regexp.QuoteMeta(cmd) + ` .*--json.*\ncp stdout (\S+)\nexec jq -e .* (\S+)$`)
			ok := false
			for _, m := range re.FindAllStringSubmatch(scripts.String(), -1) {
				ok = ok || m[1] == m[2]
			}
			if !ok {
				t.Errorf("%s lists --json, but no script runs it with --json and checks the output with jq", cmd)
			}
		}
	}
	if found < 10 {
		t.Fatalf("found only %d commands with --json: is the --help parsing broken?", found)
	}
}

// commands lists the leaf commands under path, from --help.
func commands(t *testing.T, main func([]string, *command.Env) int, path []string) [][]string {
	help := runHelp(main, append(append([]string{}, path...), "--help"))
	_, list, ok := strings.Cut(help, "Commands:\n")
	if !ok {
		return [][]string{path}
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var out [][]string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			out = append(out, commands(t, main, append(append([]string{}, path...), f[0]))...)
		}
	}
	return out
}

func runHelp(main func([]string, *command.Env) int, args []string) string {
	var out bytes.Buffer
	main(args, &command.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }})
	return out.String()
}
