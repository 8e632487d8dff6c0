package principals

import (
	"bytes"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/devid-ssh/devid/deviceid/idform"
)

// scan parses a policy line by line, calls each for every rule with its
// line number and fields (the account, then the principals; slices of text
// in a buffer reused for the next rule), and returns every line's error.
// It allocates nothing per line: the helper scans the policy at every
// login.
func scan(file string, text []byte, each func(line int, fields [][]byte)) ParseErrors {
	var errs ParseErrors
	fields := make([][]byte, 0, 8)
	for n := 1; len(text) > 0; n++ {
		var line []byte
		line, text, _ = bytes.Cut(text, []byte("\n"))
		var msg string
		fields, msg = parseLine(line, fields[:0])
		switch {
		case msg != "":
			errs = append(errs, &ParseError{File: file, Line: n, Msg: msg})
		case len(fields) > 0:
			each(n, fields)
		}
	}
	return errs
}

// parseLine parses one line without its newline into fields (appended to
// buf): none for a blank or comment line. Or it says why the line does not
// parse.
func parseLine(line []byte, buf [][]byte) ([][]byte, string) {
	fields, msg := splitFields(line, buf)
	if msg != "" || len(fields) == 0 {
		return fields, msg
	}
	account, principals := fields[0], fields[1:]
	if msg := checkAccount(account); msg != "" {
		return fields, msg
	}
	if len(principals) == 0 {
		return fields, fmt.Sprintf("account %s lists no principals", account)
	}
	for i, p := range principals {
		if msg := checkPrincipal(p); msg != "" {
			return fields, msg
		}
		for _, q := range principals[:i] {
			if bytes.Equal(p, q) {
				return fields, fmt.Sprintf("%s is listed twice", p)
			}
		}
	}
	return fields, ""
}

// splitFields appends to buf the fields of line, separated by spaces and
// tabs, up to a field that starts with # (a comment); or it says what is
// wrong with the line's characters. Plain ASCII lines, the usual ones, take
// a fast path of predictable loops and bytes.IndexByte.
func splitFields(line []byte, buf [][]byte) ([][]byte, string) {
	tabs := false
	for _, b := range line {
		if b < ' ' || b >= 0x7f {
			if b != '\t' {
				if msg := checkText(line); msg != "" {
					return buf, msg
				}
			}
			tabs = true // or non-ASCII text: either way, the careful path
		}
	}
	for rest := line; ; {
		i := 0
		for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
			i++
		}
		rest = rest[i:]
		if len(rest) == 0 || rest[0] == '#' {
			return buf, ""
		}
		end := bytes.IndexByte(rest, ' ')
		if tabs {
			if t := bytes.IndexByte(rest, '\t'); t >= 0 && (end < 0 || t < end) {
				end = t
			}
		}
		if end < 0 {
			end = len(rest)
		}
		buf, rest = append(buf, rest[:end]), rest[end:]
	}
}

// checkText says what is wrong with a line's characters, if anything.
func checkText(line []byte) string {
	for i := 0; i < len(line); {
		if b := line[i]; b >= ' ' && b < 0x7f || b == '\t' { // printable ASCII
			i++
			continue
		}
		c, size := utf8.DecodeRune(line[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			return fmt.Sprintf("not UTF-8 text (byte %#02x at column %d)", line[i], i+1)
		case c == '\r':
			return "control character U+000D (a CRLF line ending?)"
		case unicode.IsControl(c):
			return fmt.Sprintf("control character %U", c)
		case unicode.IsSpace(c):
			return fmt.Sprintf("%U is white space other than space or tab", c)
		case unicode.In(c, unicode.Cf):
			return fmt.Sprintf("invisible formatting character %U", c)
		}
		i += size
	}
	return ""
}

func checkAccount(a []byte) string {
	switch {
	case string(a) == AnyAccount, validLogin(a):
		return ""
	case bytes.ContainsAny(a, "{}"):
		return fmt.Sprintf("%s: placeholders belong in principals, not in the account field", a)
	case bytes.Contains(a, []byte(AnyAccount)):
		return fmt.Sprintf("account %s: patterns are not supported; * alone matches any account", a)
	}
	return fmt.Sprintf("account %s is not a login name (letters, digits, . _ - @, an optional final $, not starting with -)", a)
}

// validLogin reports whether a is a login name the policy accepts: see the
// package documentation.
func validLogin(a []byte) bool {
	a = bytes.TrimSuffix(a, []byte("$"))
	if len(a) == 0 || a[0] == '-' {
		return false
	}
	for _, c := range a {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return false
		}
	}
	return true
}

func checkPrincipal(p []byte) string {
	eq, braces := -1, false
	for i, c := range p { // one pass; the characters it looks for are rare
		switch c {
		case '=':
			if eq < 0 {
				eq = i
			}
		case '{', '}':
			braces = true
		}
	}
	if eq >= 0 && isOptionName(p[:eq]) {
		return fmt.Sprintf("%s looks like an option; options (%s=) are not supported", p, p[:eq])
	}
	for rest := p; braces; {
		open, end := bytes.IndexByte(rest, '{'), bytes.IndexByte(rest, '}')
		switch {
		case open < 0 && end < 0:
			braces = false
		case end < 0:
			return fmt.Sprintf("%s has { without }", p)
		case open < 0 || end < open:
			return fmt.Sprintf("%s has } without {", p)
		case string(rest[open:end+1]) != accountPlaceholder:
			return fmt.Sprintf("unknown placeholder %s (the only one is %s)", rest[open:end+1], accountPlaceholder)
		default:
			rest = rest[end+1:]
		}
	}
	if len(p) > 7 && string(p[:7]) == "urn:ek:" && !idform.Valid(string(p)) {
		return fmt.Sprintf("%s is not a device ID (%s and 44 characters of standard base64)", p, idform.Prefix)
	}
	return ""
}

// isOptionName reports whether s could name an option: a letter, then
// letters, digits, - and _ (so no colon, which every principal devid's CA
// issues has).
func isOptionName(s []byte) bool {
	for i, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '_')) {
			return false
		}
	}
	return len(s) > 0
}

// allows reports whether a rule with this account field and these
// principals allows a login to account by a certificate carrying have. It
// serves rules as written in the file and as parsed into a Policy alike.
func allows[T string | []byte](ruleAccount T, principals []T, account string, have []string) bool {
	if string(ruleAccount) != AnyAccount && string(ruleAccount) != account {
		return false
	}
	for _, p := range principals {
		if !carries(have, p, account) {
			return false
		}
	}
	return true
}

// carries reports whether have holds principal p, with {account} in p
// standing for account.
func carries[T string | []byte](have []string, p T, account string) bool {
	i := placeholder(p)
	for _, h := range have {
		if i < 0 && string(p) == h || i >= 0 && expandsTo(p, i, account, h) {
			return true
		}
	}
	return false
}

// expandsTo reports whether p, whose first {account} is at i, is s once
// every {account} is replaced by account. It builds no replacement.
func expandsTo[T string | []byte](p T, i int, account, s string) bool {
	for ; i >= 0; i = placeholder(p) {
		if len(s) < i+len(account) || string(p[:i]) != s[:i] || s[i:i+len(account)] != account {
			return false
		}
		p, s = p[i+len(accountPlaceholder):], s[i+len(account):]
	}
	return string(p) == s
}

// placeholder returns the index of the first {account} in p, or -1.
func placeholder[T string | []byte](p T) int {
	for i := 0; i+len(accountPlaceholder) <= len(p); i++ {
		if p[i] == '{' && string(p[i:i+len(accountPlaceholder)]) == accountPlaceholder {
			return i
		}
	}
	return -1
}
