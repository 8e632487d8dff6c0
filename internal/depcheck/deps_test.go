package depcheck

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite cmd/*/deps.txt from go list")

const module = "github.com/devid-ssh/devid"

// binaries are the module's commands, each with a cmd/NAME/deps.txt.
var binaries = []string{"devid", "devid-ca", "devid-hostd", "devid-principals", "devid-agent", "devid-demo", "devid-images", "devid-bench"}

// hostBinaries run on every host (or an operator's laptop): they must not
// depend on github.com/smallstep/certificates, whose dependency tree would
// ride along.
var hostBinaries = []string{"devid-hostd", "devid-principals", "devid-agent", "devid"}

// operatorForbidden are what devid, the operator's command, must not link:
// the CA's stores and step's database. It speaks to the CA through
// package adminapi.
var operatorForbidden = []string{
	module + "/inventory",
	module + "/revocation",
	"github.com/smallstep/nosql",
	"github.com/smallstep/certificates",
}

// goEnv fixes the platform: the lists are linux/amd64's, whatever runs
// the test.
var goEnv = append(os.Environ(), "GOOS=linux", "GOARCH=amd64")

// depsCache holds each binary's dependencies: go list is slow.
var depsCache = map[string][]string{}

// deps returns the packages outside the standard library that cmd/NAME
// links, sorted.
func deps(t *testing.T, name string) []string {
	t.Helper()
	if d, ok := depsCache[name]; ok {
		return d
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"/cmd/"+name)
	cmd.Env = goEnv
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps cmd/%s: %v\n%s", name, err, stderr(err))
	}
	d := strings.Fields(string(out))
	slices.Sort(d)
	depsCache[name] = d
	return d
}

func stderr(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

func depsFile(name string) string { return filepath.Join("..", "..", "cmd", name, "deps.txt") }

func depsText(name string, d []string) string {
	return "# Packages outside the standard library that cmd/" + name + " links (go list -deps,\n" +
		"# GOOS=linux GOARCH=amd64). Regenerate: go test ./internal/depcheck -update\n" +
		strings.Join(d, "\n") + "\n"
}

// TestDepsFiles: each binary's deps.txt is what it links now.
func TestDepsFiles(t *testing.T) {
	for _, name := range binaries {
		want := depsText(name, deps(t, name))
		file := depsFile(name)
		if *update {
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("cmd/%s: %v; write it with: go test ./internal/depcheck -update", name, err)
			continue
		}
		if string(got) != want {
			t.Errorf("cmd/%s/deps.txt is not what cmd/%s links now:\n%s\nIf the change is meant, regenerate with: go test ./internal/depcheck -update",
				name, name, lineDiff(string(got), want))
		}
	}
	// Every command has a list, and the test knows every command.
	dirs, err := os.ReadDir(filepath.Join("..", "..", "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if d.IsDir() && !slices.Contains(binaries, d.Name()) {
			t.Errorf("cmd/%s is not in binaries (deps_test.go): add it, then run go test ./internal/depcheck -update", d.Name())
		}
	}
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// forbidden returns the packages of d that are pkgs or below them.
func forbidden(d []string, pkgs ...string) []string {
	var bad []string
	for _, dep := range d {
		for _, p := range pkgs {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				bad = append(bad, dep)
			}
		}
	}
	return bad
}

func TestHostBinariesAvoidStepCA(t *testing.T) {
	for _, name := range hostBinaries {
		for _, dep := range forbidden(deps(t, name), "github.com/smallstep/certificates") {
			t.Errorf("cmd/%s depends on %s", name, dep)
		}
	}
	// The check itself works: devid-ca does depend on step-ca.
	if !slices.Contains(deps(t, "devid-ca"), "github.com/smallstep/certificates/authority") {
		t.Fatal("go list -deps cmd/devid-ca does not show step-ca: the check above would check nothing")
	}
}

func TestOperatorAvoidsCAStores(t *testing.T) {
	for _, dep := range forbidden(deps(t, "devid"), operatorForbidden...) {
		t.Errorf("cmd/devid depends on %s: the operator's command speaks to the CA through package adminapi only", dep)
	}
	// The check itself works: devid-ca links every one of them.
	ca := deps(t, "devid-ca")
	for _, p := range operatorForbidden {
		if len(forbidden(ca, p)) == 0 {
			t.Errorf("cmd/devid-ca does not link %s: the check above would not notice it either", p)
		}
	}
}
