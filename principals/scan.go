package principals

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/devid-ssh/devid/deviceid/idform"
)

// scanner parses a policy line by line, in one piece or in chunks of
// whole lines, calls each for every rule with its line number and fields
// (the account, then the principals: slices of the text, in a buffer reused
// for the next rule), and collects every line's error. It allocates nothing
// per line: the helper scans the policy at every login.
type scanner struct {
	file   string
	each   func(line int, fields [][]byte)
	line   int // lines scanned
	fields [][]byte
	errs   ParseErrors
}

// scan scans text: whole lines, each ending in a newline but the file's
// last.
func (s *scanner) scan(text []byte) {
	for len(text) > 0 {
		var line []byte
		line, text, _ = bytes.Cut(text, []byte("\n"))
		s.line++
		var msg string
		s.fields, msg = parseLine(line, s.fields[:0])
		switch {
		case msg != "":
			s.errs = append(s.errs, &ParseError{File: s.file, Line: s.line, Msg: msg})
		case len(s.fields) > 0:
			s.each(s.line, s.fields)
		}
	}
}

// policyFile is an open policy file, read with system calls: an os.File's
// set-up (a finaliser, a second fstat) costs the helper more than the reads.
type policyFile int

// openPolicy opens the policy file at path with LoadPolicy's checks.
func openPolicy(path string) (policyFile, error) {
	fd, err := retry(func() (int, error) { return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) })
	if err != nil {
		return -1, fmt.Errorf("principals: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("principals: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if msg := checkMode(&st); msg != "" {
		syscall.Close(fd)
		return -1, fmt.Errorf("principals: %s: %s", path, msg)
	}
	return policyFile(fd), nil
}

func (f policyFile) Read(p []byte) (int, error) {
	n, err := retry(func() (int, error) { return syscall.Read(int(f), p) })
	switch {
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (f policyFile) Close() error { return syscall.Close(int(f)) }

// retry calls a system call until it is not interrupted.
func retry(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// scanReader scans a policy file read from r, in chunks, so that the
// helper touches little fresh memory. Its error is ParseErrors when the
// file was read but does not parse.
func scanReader(file string, r io.Reader, each func(line int, fields [][]byte)) error {
	s := &scanner{file: file, each: each}
	buf := make([]byte, 8192)
	kept, total := 0, 0 // kept: the start of a line, at the front of buf
	for {
		n, err := r.Read(buf[kept:])
		if total += n; total > MaxPolicySize {
			return fmt.Errorf("principals: %s: larger than %d bytes", file, MaxPolicySize)
		}
		data := buf[:kept+n]
		if err == io.EOF {
			s.scan(data)
			break
		}
		if err != nil {
			return fmt.Errorf("principals: read %s: %w", file, err)
		}
		if end := bytes.LastIndexByte(data, '\n'); end >= 0 {
			s.scan(data[:end+1])
			kept = copy(buf, data[end+1:])
		} else {
			kept = len(data)
		}
		if kept == len(buf) { // a line longer than buf
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
	if s.errs != nil {
		return s.errs
	}
	return nil
}

// parseLine parses one line without its newline into fields (appended to
// buf): none for a blank or comment line. Or it says why the line does not
// parse.
func parseLine(line []byte, buf [][]byte) ([][]byte, string) {
	// One pass splits the fields and notes which of the slower checks the
	// line needs: plain ASCII without = { } (most lines) needs none.
	var class uint8
	start, comment := -1, false
	for i, b := range line {
		c := byteClass[b]
		class |= c
		switch {
		case c&classBlank == 0:
			if start < 0 && !comment {
				start, comment = i, b == '#' // a field that starts with # starts a comment
			}
		case start >= 0:
			if !comment {
				buf = append(buf, line[start:i])
			}
			start = -1
		}
	}
	if start >= 0 && !comment {
		buf = append(buf, line[start:])
	}
	if class&classOther != 0 {
		if msg := checkText(line); msg != "" {
			return buf, msg
		}
	}
	fields := buf
	if len(fields) == 0 {
		return fields, ""
	}
	account, principals := fields[0], fields[1:]
	if msg := checkAccount(account); msg != "" {
		return fields, msg
	}
	if len(principals) == 0 {
		return fields, fmt.Sprintf("account %s lists no principals", account)
	}
	for i, p := range principals {
		if msg := checkPrincipal(p, class&classSyntax != 0); msg != "" {
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

// Classes of bytes for parseLine's pass over a line.
const (
	classBlank  = 1 << iota // space or tab: separates fields
	classSyntax             // = { }, which checkPrincipal looks for
	classOther              // not printable ASCII: checkText decides
)

// byteClass holds each byte's class: a constant, so that it costs nothing
// at start-up (TestByteClass checks it).
const byteClass = "" +
	"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x01\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04" +
	"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00" +
	"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x02\x00\x04" +
	"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04" +
	"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04" +
	"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04" +
	"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04"

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

// checkPrincipal says what is wrong with principal p, if anything; syntax
// is false when the line has none of = { }.
func checkPrincipal(p []byte, syntax bool) string {
	if syntax {
		if eq := bytes.IndexByte(p, '='); eq >= 0 && isOptionName(p[:eq]) {
			return fmt.Sprintf("%s looks like an option; options (%s=) are not supported", p, p[:eq])
		}
	}
	for rest := p; syntax; {
		open, end := bytes.IndexByte(rest, '{'), bytes.IndexByte(rest, '}')
		switch {
		case open < 0 && end < 0:
			syntax = false
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
	if !forAccount(ruleAccount, account) {
		return false
	}
	for _, p := range principals {
		if !carries(have, p, account) {
			return false
		}
	}
	return true
}

// forAccount reports whether a rule with this account field applies to
// logins to account.
func forAccount[T string | []byte](ruleAccount T, account string) bool {
	return string(ruleAccount) == AnyAccount || string(ruleAccount) == account
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
