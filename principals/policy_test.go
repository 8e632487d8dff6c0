package principals_test

import (
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/principals"
)

// devID returns a device ID made from name.
func devID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// designPolicy is the example of DESIGN.md and the README.
const designPolicy = `# account   principals the certificate must all carry
admin       group:sre collection:sre-laptops
deploy      urn:ek:sha256:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0q1w=
*           login:{account}
`

func mustParse(t testing.TB, text string) *principals.Policy {
	t.Helper()
	p, err := principals.ParsePolicy("principals.conf", []byte(text))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

func TestParsePolicy(t *testing.T) {
	p := mustParse(t, designPolicy)
	want := []string{
		"2: admin group:sre collection:sre-laptops",
		"3: deploy urn:ek:sha256:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0q1w=",
		"4: * login:{account}",
	}
	if len(p.Rules) != len(want) {
		t.Fatalf("%d rules, want %d", len(p.Rules), len(want))
	}
	for i, r := range p.Rules {
		if got := strconv.Itoa(r.Line) + ": " + r.String(); got != want[i] {
			t.Errorf("rule %d = %q, want %q", i, got, want[i])
		}
	}
	if ws := p.Warnings(); len(ws) != 0 {
		t.Errorf("warnings: %v", ws)
	}
	// Tabs, trailing blanks, comments after the fields, no final newline.
	p = mustParse(t, "\n\t# only a comment\n  admin\tgroup:sre   # the SRE team\t\nops group:c#sharp")
	if len(p.Rules) != 2 || p.Rules[0].Line != 3 || p.Rules[0].String() != "admin group:sre" || p.Rules[1].String() != "ops group:c#sharp" {
		t.Errorf("rules = %+v", p.Rules)
	}
	// Every account form that is a login name.
	mustParse(t, "alice.smith x\nbob@example.com x\n_svc-1 x\nHOST$ x\nu x\n")
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // every error, in order
	}{
		{"no principals", "admin\n", []string{"principals.conf:1: account admin lists no principals"}},
		{"no principals, comment", "ok x\nadmin # x\n", []string{"principals.conf:2: account admin lists no principals"}},
		{"unknown placeholder", "a x\nb y\n* login:{user}\n", []string{"principals.conf:3: unknown placeholder {user} (the only one is {account})"}},
		{"empty placeholder", "* login:{}\n", []string{"principals.conf:1: unknown placeholder {} (the only one is {account})"}},
		{"unclosed", "* login:{account\n", []string{"principals.conf:1: login:{account has { without }"}},
		{"stray close", "* login:account}\n", []string{"principals.conf:1: login:account} has } without {"}},
		{"nested", "* login:{{account}}\n", []string{"principals.conf:1: unknown placeholder {{account} (the only one is {account})"}},
		{"placeholder in account", "{account} login:x\n", []string{"principals.conf:1: {account}: placeholders belong in principals, not in the account field"}},
		{"account pattern", "adm* group:sre\n", []string{"principals.conf:1: account adm*: patterns are not supported; * alone matches any account"}},
		{"account dash", "-x group:sre\n", []string{"principals.conf:1: account -x is not a login name (letters, digits, . _ - @, an optional final $, not starting with -)"}},
		{"account slash", "a/b group:sre\n", []string{"principals.conf:1: account a/b is not a login name (letters, digits, . _ - @, an optional final $, not starting with -)"}},
		{"account non-ASCII", "jürgen group:sre\n", []string{"principals.conf:1: account jürgen is not a login name (letters, digits, . _ - @, an optional final $, not starting with -)"}},
		{"twice", "admin group:sre collection:x group:sre\n", []string{"principals.conf:1: group:sre is listed twice"}},
		{"bad device ID", "deploy urn:ek:sha256:abc\n", []string{"principals.conf:1: urn:ek:sha256:abc is not a device ID (urn:ek:sha256: and 44 characters of standard base64)"}},
		{"device ID, other hash", "deploy urn:ek:sha1:" + strings.Repeat("A", 28) + "\n", []string{"principals.conf:1: urn:ek:sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAA is not a device ID (urn:ek:sha256: and 44 characters of standard base64)"}},
		{"option", "admin from=10.0.0.0/8 group:sre\n", []string{"principals.conf:1: from=10.0.0.0/8 looks like an option; options (from=) are not supported"}},
		{"CRLF", "admin group:sre\r\n", []string{"principals.conf:1: control character U+000D (a CRLF line ending?)"}},
		{"NUL", "admin group:\x00sre\n", []string{"principals.conf:1: control character U+0000"}},
		{"escape", "admin group:sre\x1b[31m\n", []string{"principals.conf:1: control character U+001B"}},
		{"C1 control", "admin group:sre\u0085\n", []string{"principals.conf:1: control character U+0085"}},
		{"DEL", "admin group:sre\x7f\n", []string{"principals.conf:1: control character U+007F"}},
		{"not UTF-8", "ok x\nadmin group:\xffsre\n", []string{"principals.conf:2: not UTF-8 text (byte 0xff at column 13)"}},
		{"Latin-1", "admin group:caf\xe9\n", []string{"principals.conf:1: not UTF-8 text (byte 0xe9 at column 16)"}},
		{"no-break space", "admin group:sre\u00a0collection:x\n", []string{"principals.conf:1: U+00A0 is white space other than space or tab"}},
		{"vertical tab", "admin\vgroup:sre\n", []string{"principals.conf:1: control character U+000B"}},
		{"zero-width space", "admin group:s\u200bre\n", []string{"principals.conf:1: invisible formatting character U+200B"}},
		{"bidi override", "admin group:\u202eers\n", []string{"principals.conf:1: invisible formatting character U+202E"}},
		{"byte-order mark", "\ufeffadmin group:sre\n", []string{"principals.conf:1: invisible formatting character U+FEFF"}},
		{"several", "admin\n* login:{user}\nok x\nadmin group:sre\r\n", []string{
			"principals.conf:1: account admin lists no principals",
			"principals.conf:2: unknown placeholder {user} (the only one is {account})",
			"principals.conf:4: control character U+000D (a CRLF line ending?)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := principals.ParsePolicy("principals.conf", []byte(tc.text))
			if p != nil || err == nil {
				t.Fatalf("parsed: %+v", p)
			}
			errs, ok := err.(principals.ParseErrors)
			if !ok {
				t.Fatalf("error %T %v, want ParseErrors", err, err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !strings.HasPrefix(err.Error(), tc.want[0]) {
				t.Errorf("Error() = %q, want it to start with the first error", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	p := mustParse(t, `admin group:sre
* login:{account}
admin group:sre
admin collection:x group:sre
bob login:bob group:dev
* login:{account} group:dev
* login:bob
carol group:dev
`)
	var got []string
	for _, w := range p.Warnings() {
		got = append(got, w.String())
	}
	want := []string{
		"principals.conf:3: duplicate of line 1",
		"principals.conf:4: never used: line 1 (admin group:sre) matches every login this line would",
		"principals.conf:5: never used: line 2 (* login:{account}) matches every login this line would",
		"principals.conf:6: never used: line 2 (* login:{account}) matches every login this line would",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ws := mustParse(t, "# nothing\n").Warnings(); len(ws) != 1 || ws[0].String() != "principals.conf:1: no rules: every login is denied" {
		t.Errorf("empty policy: %v", ws)
	}
}

func TestPolicyStringRoundTrip(t *testing.T) {
	p := mustParse(t, designPolicy)
	q := mustParse(t, p.String())
	if p.String() != q.String() || len(q.Rules) != 3 {
		t.Errorf("round trip:\n%s\n%s", p, q)
	}
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "principals.conf")
	write := func(data string, mode os.FileMode) {
		t.Helper()
		os.Remove(path)
		if err := os.WriteFile(path, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	write(designPolicy, 0o644)
	if p, err := principals.LoadPolicy(path); err != nil || len(p.Rules) != 3 || p.File != path {
		t.Fatalf("LoadPolicy = %+v, %v", p, err)
	}
	write(designPolicy, 0o600)
	if _, err := principals.LoadPolicy(path); err != nil {
		t.Fatalf("mode 0600: %v", err)
	}
	for _, tc := range []struct {
		name string
		prep func()
		want string
	}{
		{"missing", func() { os.Remove(path) }, "no such file or directory"},
		{"group-writable", func() { write(designPolicy, 0o664) }, "writable by group or others (mode 0664)"},
		{"world-writable", func() { write(designPolicy, 0o646) }, "writable by group or others (mode 0646)"},
		{"directory", func() { os.Remove(path); os.Mkdir(path, 0o755) }, "not a regular file"},
		{"too large", func() { os.Remove(path); write(strings.Repeat("# padding\n", principals.MaxPolicySize/10+1), 0o644) }, "larger than 1048576 bytes"},
		{"parse error", func() { write("* login:{user}\n", 0o644) }, path + ":1: unknown placeholder {user}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.prep()
			p, err := principals.LoadPolicy(path)
			if p != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadPolicy = %v, %v; want an error containing %q", p, err, tc.want)
			}
		})
	}
	if os.Geteuid() == 0 {
		t.Run("foreign owner", func(t *testing.T) {
			os.Remove(path)
			write(designPolicy, 0o644)
			if err := os.Chown(path, 1234, 0); err != nil {
				t.Fatal(err)
			}
			_, err := principals.LoadPolicy(path)
			if err == nil || !strings.Contains(err.Error(), "owned by uid 1234, neither root nor the user reading it (uid 0)") {
				t.Fatalf("LoadPolicy: %v", err)
			}
		})
	}
}

// TestByteClass checks the parser's table of byte classes.
func TestByteClass(t *testing.T) {
	if len(principals.ByteClass) != 256 {
		t.Fatalf("%d classes", len(principals.ByteClass))
	}
	for b := range 256 {
		var want byte
		switch {
		case b == ' ' || b == '\t':
			want = principals.ClassBlank
		case b == '=' || b == '{' || b == '}':
			want = principals.ClassSyntax
		case b < ' ' || b >= 0x7f:
			want = principals.ClassOther
		}
		if got := principals.ByteClass[b]; got != want {
			t.Errorf("class of %#02x = %d, want %d", b, got, want)
		}
	}
}

// TestWarningsForeignPrincipals: a principal of a kind devid never issues
// (grp:sre for group:sre) can never match a devid certificate: a warning,
// not an error (the line allows nobody, so it locks nobody out), of its own
// type.
func TestWarningsForeignPrincipals(t *testing.T) {
	p := mustParse(t, `admin grp:sre
* login:{account}
ops group:ops host:web
web user:alice@example.com collection:web urn:ek:sha256:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0q1w=
`)
	var ws []principals.Warning = p.Warnings()
	var got []string
	for _, w := range ws {
		got = append(got, w.String())
	}
	want := []string{
		`principals.conf:1: principal "grp:sre" is of no kind devid issues (device IDs urn:ek:sha256:…, user:, login:, group:, collection:): this line allows no devid certificate`,
		`principals.conf:3: principal "host:web" is of no kind devid issues (device IDs urn:ek:sha256:…, user:, login:, group:, collection:): this line allows no devid certificate`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
