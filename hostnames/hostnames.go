// Package hostnames is the grammar of the host names a device may have in
// its SSH host certificates, as the inventory keeps them (a device's and a
// collection's HostNames) and as devid-ca's issuance checks a host
// certificate request against them.
//
// An entry is one of:
//
//   - an exact host name: dot-separated labels of lower-case letters,
//     digits and hyphens (RFC 1123: 1 to 63 characters, not starting or
//     ending with a hyphen; 253 characters in all), whose last label is
//     not all digits; e.g. web1.example.com or web1;
//   - an exact IP address, in its canonical form (10.1.2.3, 2001:db8::1);
//   - a pattern, "*." and an exact host name of at least two labels: the
//     "*" stands for exactly one label, so *.web.example.com allows
//     a.web.example.com but neither web.example.com nor
//     a.b.web.example.com;
//   - a CIDR prefix, with no bits set past the prefix length
//     (10.1.0.0/16, 2001:db8::/32): it allows the addresses in it.
//
// Names are lower case because ssh lowercases the host name it checks a host
// certificate's principals against: an upper-case principal would never
// match. Parse is strict: anything else is refused with an error naming
// the entry and what is wrong.
package hostnames

import (
	"fmt"
	"net/netip"
	"strings"
)

// Entry is one parsed entry.
type Entry struct {
	text   string
	kind   kind
	suffix string       // pattern: what follows "*", with its dot
	prefix netip.Prefix // cidr
}

type kind uint8

const (
	exactName kind = iota + 1
	exactAddr
	pattern
	cidr
)

// Parse parses one entry.
func Parse(s string) (Entry, error) {
	bad := func(format string, args ...any) (Entry, error) {
		return Entry{}, fmt.Errorf("host name entry %q: %s", s, fmt.Sprintf(format, args...))
	}
	switch {
	case s == "":
		return bad("empty")
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return bad("not a CIDR prefix (want e.g. 10.1.0.0/16): %v", err)
		}
		if m := p.Masked(); m != p {
			return bad("bits are set past the prefix length: write %s", m)
		}
		if p.String() != s {
			return bad("write it as %s", p)
		}
		return Entry{text: s, kind: cidr, prefix: p}, nil
	case strings.ContainsAny(s, "*?[]") && (!strings.HasPrefix(s, "*.") || strings.ContainsAny(s[2:], "*?[]")):
		return bad("\"*\" may only be the whole first label (*.example.com): it stands for exactly one label")
	case strings.HasPrefix(s, "*."):
		rest := s[2:]
		if err := checkName(rest); err != nil {
			return bad("after \"*.\": %v", err)
		}
		if !strings.Contains(rest, ".") {
			return bad("a pattern needs at least two labels after \"*.\" (e.g. *.web.example.com), or it would allow a whole top-level domain")
		}
		return Entry{text: s, kind: pattern, suffix: s[1:]}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return bad("an address with a zone is not a host name")
		}
		if a.String() != s {
			return bad("write the address as %s", a)
		}
		return Entry{text: s, kind: exactAddr}, nil
	}
	if err := checkName(s); err != nil {
		return bad("%v", err)
	}
	return Entry{text: s, kind: exactName}, nil
}

// ParseList parses entries; the first bad one is the error.
func ParseList(ss []string) ([]Entry, error) {
	out := make([]Entry, 0, len(ss))
	for _, s := range ss {
		e, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// String is the entry as written.
func (e Entry) String() string { return e.text }

// Literal reports whether the entry names exactly one host name or address
// (not a pattern or a prefix): what a host certificate may be given when
// its request names none.
func (e Entry) Literal() bool { return e.kind == exactName || e.kind == exactAddr }

// Allows reports whether the entry allows principal, a name or address a
// host certificate request asks for. principal must itself be a valid
// exact name or address (Valid).
func (e Entry) Allows(principal string) bool {
	if !Valid(principal) {
		return false
	}
	switch e.kind {
	case exactName, exactAddr:
		return principal == e.text
	case pattern:
		label, ok := strings.CutSuffix(principal, e.suffix)
		return ok && label != "" && !strings.Contains(label, ".")
	case cidr:
		a, err := netip.ParseAddr(principal)
		return err == nil && e.prefix.Contains(a)
	}
	return false
}

// Valid reports whether s is an exact host name or IP address as Parse
// accepts it: what a host certificate's principal may be.
func Valid(s string) bool {
	e, err := Parse(s)
	return err == nil && e.Literal()
}

// checkName checks an exact host name.
func checkName(name string) error {
	if len(name) > 253 {
		return fmt.Errorf("%d characters, more than 253", len(name))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return fmt.Errorf("empty label (want dot-separated labels of a-z 0-9 -)")
		case len(l) > 63:
			return fmt.Errorf("label %q is longer than 63 characters", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, r := range l {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			case r >= 'A' && r <= 'Z':
				return fmt.Errorf("upper case %q: write host names in lower case (ssh compares them in lower case)", r)
			default:
				return fmt.Errorf("label %q has %q (want a-z 0-9 -)", l, r)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("the last label is all digits, and it is not an IP address")
	}
	return nil
}
