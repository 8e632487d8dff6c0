package hostnames

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"web1", "web1.example.com", "10.1.2.3", "2001:db8::1", "*.web.example.com", "10.1.0.0/16", "2001:db8::/32", "a-b.c"} {
		e, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if e.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, e.String())
		}
	}
	for s, want := range map[string]string{
		"":                      "empty",
		"Web1.example.com":      "lower case",
		"web_1":                 `has '_'`,
		"-web":                  "hyphen",
		"a..b":                  "empty label",
		"web.example.com.":      "empty label",
		"*.com":                 "at least two labels",
		"*":                     `"*" may only be`,
		"web*.example.com":      `"*" may only be`,
		"*.*.example.com":       `"*" may only be`,
		"a.*.example.com":       `"*" may only be`,
		"10.1.2.3/16":           "write 10.1.0.0/16",
		"10.1.0.0/33":           "not a CIDR prefix",
		"1.2.3.4.5":             "all digits",
		"::FFFF:10.1.2.3":       "write the address as",
		"fe80::1%eth0":          "zone",
		"web example":           `has ' '`,
		strings.Repeat("a", 64): "longer than 63",
	} {
		_, err := Parse(s)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "host name entry") {
			t.Errorf("Parse(%q) = %v, want an error with %q", s, err, want)
		}
	}
}

func TestAllows(t *testing.T) {
	for _, c := range []struct {
		entry, principal string
		want             bool
	}{
		{"web1.example.com", "web1.example.com", true},
		{"web1.example.com", "web2.example.com", false},
		{"web1.example.com", "WEB1.example.com", false},
		{"*.web.example.com", "a.web.example.com", true},
		{"*.web.example.com", "web.example.com", false},
		{"*.web.example.com", "a.b.web.example.com", false},
		{"*.web.example.com", "a.xweb.example.com", false},
		{"*.web.example.com", "bank.example.com", false},
		{"10.1.0.0/16", "10.1.200.3", true},
		{"10.1.0.0/16", "10.2.0.1", false},
		{"10.1.0.0/16", "10.1.0.0/16", false},
		{"10.1.0.0/16", "::ffff:10.1.2.3", false},
		{"2001:db8::/32", "2001:db8::7", true},
		{"10.1.2.3", "10.1.2.3", true},
		{"*.example.com", "*.example.com", false},
	} {
		e, err := Parse(c.entry)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Allows(c.principal); got != c.want {
			t.Errorf("%s allows %q = %v, want %v", c.entry, c.principal, got, c.want)
		}
	}
}

func TestLiteral(t *testing.T) {
	for s, want := range map[string]bool{"web1": true, "10.1.2.3": true, "*.a.b": false, "10.0.0.0/8": false} {
		if e, _ := Parse(s); e.Literal() != want {
			t.Errorf("%s: Literal() = %v", s, !want)
		}
	}
}

// FuzzParse: Parse never panics; what it accepts prints as given and parses
// again the same; an entry allows only valid exact names or addresses, and
// an exact entry allows itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"web1.example.com", "*.web.example.com", "10.1.0.0/16", "2001:db8::/32", "10.1.2.3", "::1", "*.", "*", "a/b", "1.2.3.4/0", "A.b"} {
		f.Add(s, "a.web.example.com")
	}
	f.Fuzz(func(t *testing.T, s, principal string) {
		e, err := Parse(s)
		if err != nil {
			if !strings.Contains(err.Error(), "host name entry") {
				t.Fatalf("error does not name the entry: %v", err)
			}
			return
		}
		if e.String() != s {
			t.Fatalf("String() = %q, want %q", e.String(), s)
		}
		if e2, err := Parse(e.String()); err != nil || e2 != e {
			t.Fatalf("reparse: %v %v", e2, err)
		}
		if e.Literal() && !e.Allows(s) {
			t.Fatalf("%q does not allow itself", s)
		}
		if e.Allows(principal) && !Valid(principal) {
			t.Fatalf("%q allows %q, which is not a valid name", s, principal)
		}
		if strings.ContainsAny(principal, " ,*\n") && e.Allows(principal) {
			t.Fatalf("%q allows %q", s, principal)
		}
	})
}
