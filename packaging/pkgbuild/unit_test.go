package pkgbuild

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tool returns the path of name, or skips t (fails it when CI=true).
func tool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found, and CI=true: install the Debian package %s", name, debianPackage)
	}
	t.Skipf("%s not found (Debian package %s)", name, debianPackage)
	return ""
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"--config":            `\-\-config`,
		`a\b`:                 `a\eb`,
		".TH x\n'x\nok. 'ok'": "\\&.TH x\n\\&'x\nok. 'ok'",
		"é…\t\x01":            `\[u00E9]\[u2026] \[uFFFD]`,
		"\xff":                `\[uFFFD]`,
	} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := quote(`say "hi" -x`); got != `"say \(dqhi\(dq \-x"` {
		t.Errorf("quote: %s", got)
	}
}

// tree is a program as helpTree would read it.
var tree = &command{
	Help: "Usage: prog COMMAND [flags] [args]\n\nprog does things.\n\nCommands:\n  run          run it\n  key          keys\n\nRun 'prog COMMAND --help' for a command's flags.\n'prog --version [--json]' prints the version.\n",
	Subs: []*command{
		{Path: []string{"run"}, Flags: []string{"--config", "--log-format"},
			Help: "Usage: prog run [--config FILE]\n\nrun it until SIGTERM; .dots and 'quotes' and \\backslashes\n\nFlags:\n  -config file\n    \tconfiguration `file` (default \"/etc/prog.json\")\n  -log-format string\n    \ttext or json\n"},
		{Path: []string{"key"}, Help: "Usage: prog key COMMAND [flags] [args]\n\nkeys\n\nCommands:\n  add          add a key\n",
			Subs: []*command{{Path: []string{"key", "add"}, Flags: []string{"--json"}, Help: "Usage: prog key add NAME [--json]\n\nadd a key\n\nFlags:\n  -json\n    \tprint JSON\n"}}},
	},
}

var prog = program{Name: "prog", Section: 8, Summary: "do things", Description: "Prog does things.\n\n.A second paragraph.",
	Exit: exitCodes, Files: [][2]string{{"/etc/prog.json", "the configuration"}}, SeeAlso: []string{"sshd(8)"}}

// TestManPage: the page's structure, and what groff and man make of it.
func TestManPage(t *testing.T) {
	page := manPage(prog, tree, "1.2.3+4.gabc", time.Date(2026, 12, 2, 23, 0, 0, 0, time.FixedZone("x", -3600)))
	s := string(page)
	for _, want := range []string{
		".TH \"PROG\" 8 \"2026\\-12\\-03\" \"devid 1.2.3+4.gabc\" \"devid\"\n",
		".SH NAME\nprog \\- do things\n",
		".B \"prog run\"\n[\\-\\-config FILE]\n",
		".B \"prog key add\"\nNAME [\\-\\-json]\n",
		".B \"prog\"\n\\-\\-version [\\-\\-json]\n",
		".PP\n\\&.A second paragraph.\n",
		".SS \"prog key add\"\n",
		".TP\n.BI \"\\-\\-config\" \" file\"\nconfiguration `file` (default \"/etc/prog.json\")\n",
		".TP\n.B \"\\-\\-json\"\nprint JSON\n",
		"run it until SIGTERM; .dots and 'quotes' and \\ebackslashes\n",
		".SH FILES\n.TP\n.I \"/etc/prog.json\"\nthe configuration\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the page lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "Run '") || strings.Contains(s, "Usage:") {
		t.Errorf("the page has help's pointers to --help or its Usage lines:\n%s", s)
	}
	groff := tool(t, "groff", "groff-base")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = bytes.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -ww: %v\n%s", err, out)
	}
	cmd = exec.Command(groff, "-man", "-Tascii", "-P-cbou")
	cmd.Stdin = bytes.NewReader(page)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"prog - do things", "--config file", "prog key add NAME [--json]", ".A second paragraph.", "run it until SIGTERM; .dots and 'quotes' and \\backslashes"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered, the page lacks %q:\n%s", want, out)
		}
	}
	// gzip -9n: no name, no time; the same page gives the same bytes.
	gz := gzipped(page)
	if !bytes.Equal(gz, gzipped(page)) {
		t.Error("gzipped differs between two runs")
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(r)
	if !bytes.Equal(back, page) || r.Name != "" || !r.ModTime.IsZero() {
		t.Errorf("gzip: name %q, time %v, same content %v", r.Name, r.ModTime, bytes.Equal(back, page))
	}
}

// complete runs the completion script in bash for the words of line (the
// last one being completed) and returns what bash would offer.
func complete(t *testing.T, script []byte, line string) string {
	t.Helper()
	bash := tool(t, "bash", "bash")
	f := filepath.Join(t.TempDir(), "completion")
	if err := os.WriteFile(f, script, 0o644); err != nil {
		t.Fatal(err)
	}
	words := strings.Split(line, " ")
	fn := "_" + strings.ReplaceAll(words[0], "-", "_")
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `source "$1" && shift && COMP_WORDS=("$@") && COMP_CWORD=$(($# - 1)) && `+fn+` && echo "${COMPREPLY[*]}"`, "bash", f)
	cmd.Args = append(cmd.Args, words...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestBashCompletion(t *testing.T) {
	script := bashCompletion("prog", tree)
	for line, want := range map[string]string{
		"prog ":                   "run key",
		"prog r":                  "run",
		"prog -":                  "--help --version",
		"prog run --c":            "--config",
		"prog run ":               "", // arguments: files (complete -o default)
		"prog key ":               "add",
		"prog key add x --":       "--help --json",
		"prog nope ":              "",
		"prog run --log-format j": "",
	} {
		if got := complete(t, script, line); got != want {
			t.Errorf("%q: %q, want %q", line, got, want)
		}
	}
}
