package krl

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SpecOptions says how AddSpec reads a revocation spec.
type SpecOptions struct {
	// Name names the spec in errors, as a file name.
	Name string
	// CA is the CA whose certificates serial: and id: lines revoke
	// (ssh-keygen -s CA.pub).
	CA ssh.PublicKey
	// AnyCA makes serial: and id: lines revoke certificates of any CA, in
	// the wildcard section (ssh-keygen -s none). It excludes CA.
	AnyCA bool
}

// SpecError is a line AddSpec refused.
type SpecError struct {
	Name string
	Line int
	Err  error
}

func (e *SpecError) Error() string { return fmt.Sprintf("krl: %s:%d: %v", e.Name, e.Line, e.Err) }

func (e *SpecError) Unwrap() error { return e.Err }

// ParseSpec reads one revocation spec (see AddSpec) into a new KRL, with
// serial: and id: lines revoking certificates of ca (nil: such lines are
// errors).
func ParseSpec(r io.Reader, ca ssh.PublicKey) (*KRL, error) {
	k := new(KRL)
	if err := k.AddSpec(r, SpecOptions{Name: "spec", CA: ca}); err != nil {
		return nil, err
	}
	return k, nil
}

// AddSpec adds the revocations in a spec, the text format `ssh-keygen -k`
// reads, as OpenSSH 9.2's ssh-keygen reads it: it refuses exactly the
// lines ssh-keygen refuses and revokes what ssh-keygen would. One item a
// line:
//
//	serial: N | serial: A-B    certificates of the CA by serial
//	id: KEYID                  certificates of the CA by key ID
//	key: PUBLIC-KEY            a plain key (a certificate: its key)
//	sha1: PUBLIC-KEY           a plain key, by its SHA1 fingerprint
//	sha256: PUBLIC-KEY         a plain key, by its SHA256 fingerprint
//	hash: SHA256:BASE64        a plain key, by a SHA256 fingerprint as ssh-keygen -l prints it
//	PUBLIC-KEY                 a plain key; a certificate by its serial
//	                           under its own CA (by key ID if serial 0)
//
// PUBLIC-KEY is a key or certificate as in a .pub file ("type base64
// [comment]"); a certificate's signature is checked.
//
// Quirks, all ssh-keygen's own:
//   - Prefixes are case-insensitive; blanks (spaces, tabs) around them and
//     at the end of the line are dropped; "#" starts a comment anywhere, so
//     a key ID cannot contain "#". Only spaces and tabs are blanks: a CRLF
//     line keeps its "\r", which makes a serial: line an error and becomes
//     part of an id: line's key ID. A NUL byte ends the line.
//   - Serials are read by C's strtoull with base 0: "0x1f" is hex, "010"
//     is octal (8) and "08" is an error; a leading "+" is allowed, and a
//     leading "-" negates modulo 2^64 ("-1" is 18446744073709551615,
//     "1--3" the range 1-18446744073709551613). Values over 2^64-1 are
//     errors. A blank is allowed after the "-" of a range but not before.
//   - "serial: 0", any range starting at 0, and a range whose end is not
//     above its start ("5-5", "9-3") are errors.
//   - "id:" with nothing after it revokes the empty key ID.
//   - sha1: and sha256: take a public key, not a fingerprint; hash: takes
//     a SHA256 fingerprint only ("SHA256:" is case-sensitive there).
//   - serial: and id: need opts.CA or opts.AnyCA, even for a certificate
//     line's own CA; certificate lines do not.
//
// Errors are *SpecError, with the line. After an error k holds part of the
// spec: discard it.
func (k *KRL) AddSpec(r io.Reader, opts SpecOptions) error {
	if opts.AnyCA && opts.CA != nil {
		return errors.New("krl: AddSpec: both CA and AnyCA")
	}
	sr := &specReader{k: k, opts: opts, pending: map[*CertSection][]SerialRange{}}
	br := bufio.NewReaderSize(r, 64<<10)
	for lnum := 1; ; lnum++ {
		line, rerr := br.ReadSlice('\n')
		if errors.Is(rerr, bufio.ErrBufferFull) {
			long := bytes.Clone(line)
			for errors.Is(rerr, bufio.ErrBufferFull) {
				line, rerr = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("krl: %s: %w", opts.Name, rerr)
		}
		if len(line) == 0 && rerr == io.EOF {
			break
		}
		if err := sr.line(specText(line)); err != nil {
			return &SpecError{Name: opts.Name, Line: lnum, Err: err}
		}
		if rerr == io.EOF {
			break
		}
	}
	for s, rs := range sr.pending {
		if err := s.Serials.AddAll(rs); err != nil {
			return err // cannot happen: checked per line
		}
	}
	return nil
}

// specReader reads spec lines into k.
type specReader struct {
	k       *KRL
	opts    SpecOptions
	caSect  *CertSection                   // for serial: and id:, once needed
	pending map[*CertSection][]SerialRange // serials, added at the end
}

// specText is what ssh-keygen makes of a line: cut at a NUL, "#" or
// newline, leading and trailing spaces and tabs dropped.
func specText(line []byte) []byte {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	if i := bytes.IndexAny(line, "#\n"); i >= 0 {
		line = line[:i]
	}
	return bytes.Trim(line, " \t")
}

// cutPrefixFold cuts an ASCII prefix, in any case, and the blanks after.
func cutPrefixFold(s []byte, prefix string) ([]byte, bool) {
	if len(s) < len(prefix) {
		return s, false
	}
	for i := range len(prefix) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return s, false
		}
	}
	return bytes.TrimLeft(s[len(prefix):], " \t"), true
}

func (sr *specReader) caSection(what string) (*CertSection, error) {
	if sr.opts.CA == nil && !sr.opts.AnyCA {
		return nil, fmt.Errorf("revoking certificates by %s requires a CA key", what)
	}
	if sr.caSect == nil {
		sr.caSect = sr.k.CertsFor(sr.opts.CA)
	}
	return sr.caSect, nil
}

func (sr *specReader) line(cp []byte) error {
	k := sr.k
	if len(cp) == 0 {
		return nil
	}
	if rest, ok := cutPrefixFold(cp, "serial:"); ok {
		s, err := sr.caSection("serial number")
		if err != nil {
			return err
		}
		first, last, err := specSerials(rest)
		if err != nil {
			return err
		}
		sr.pending[s] = append(sr.pending[s], SerialRange{first, last})
		return nil
	}
	if rest, ok := cutPrefixFold(cp, "id:"); ok {
		s, err := sr.caSection("key ID")
		if err != nil {
			return err
		}
		s.KeyIDs = append(s.KeyIDs, string(rest))
		return nil
	}
	if rest, ok := cutPrefixFold(cp, "hash:"); ok {
		h, err := specHash(string(rest))
		if err != nil {
			return err
		}
		k.SHA256 = append(k.SHA256, h)
		return nil
	}
	kind := ""
	for _, p := range []string{"key:", "sha1:", "sha256:"} {
		if rest, ok := cutPrefixFold(cp, p); ok {
			kind, cp = p, rest
			break
		}
	}
	key, err := readKey(string(cp))
	if err != nil {
		return fmt.Errorf("invalid key: %w", err)
	}
	plain := plainKey(key)
	switch kind {
	case "key:":
		k.RevokedKeys = append(k.RevokedKeys, plain)
	case "sha1:":
		k.SHA1 = append(k.SHA1, sha1.Sum(plain.Marshal()))
	case "sha256:":
		k.SHA256 = append(k.SHA256, sha256.Sum256(plain.Marshal()))
	default:
		cert, ok := key.(*ssh.Certificate)
		if !ok {
			k.RevokedKeys = append(k.RevokedKeys, key)
			return nil
		}
		s := k.CertsFor(cert.SignatureKey)
		if cert.Serial == 0 {
			s.KeyIDs = append(s.KeyIDs, cert.KeyId)
		} else {
			sr.pending[s] = append(sr.pending[s], SerialRange{cert.Serial, cert.Serial})
		}
	}
	return nil
}

// specSerials reads "N" or "A-B" as ssh-keygen does.
func specSerials(cp []byte) (first, last uint64, err error) {
	first, ep, erange := strtoull(cp)
	if len(cp) == 0 || ep < len(cp) && cp[ep] != '-' {
		return 0, 0, fmt.Errorf("invalid serial %q", cp)
	}
	if erange {
		return 0, 0, errors.New("serial out of range")
	}
	last = first
	if ep < len(cp) {
		cp = cp[ep+1:]
		var ep2 int
		last, ep2, erange = strtoull(cp)
		if len(cp) == 0 || ep2 != len(cp) {
			return 0, 0, fmt.Errorf("invalid serial %q", cp)
		}
		if erange {
			return 0, 0, errors.New("serial out of range")
		}
		if last <= first {
			return 0, 0, fmt.Errorf("invalid serial range %d:%d (the end must be above the start)", first, last)
		}
	}
	if first == 0 {
		return 0, 0, ErrSerialZero
	}
	return first, last, nil
}

// strtoull is glibc's strtoull(s, &end, 0): it returns the value, the
// index where parsing stopped (0 if there were no digits) and whether the
// value overflowed (ERANGE; the value is then 2^64-1).
func strtoull[S ~string | ~[]byte](s S) (v uint64, end int, erange bool) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	base := uint64(10)
	if i < len(s) && s[i] == '0' {
		base = 8
		if i+2 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') && digitVal(s[i+2]) < 16 {
			base = 16
			i += 2
		}
	}
	start := i
	for ; i < len(s); i++ {
		d := digitVal(s[i])
		if d >= base {
			break
		}
		if v > (math.MaxUint64-d)/base {
			erange = true
		}
		v = v*base + d
	}
	if i == start {
		return 0, 0, false
	}
	if erange {
		return math.MaxUint64, i, true
	}
	if neg {
		v = -v
	}
	return v, i, false
}

func digitVal(c byte) uint64 {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0')
	case 'a' <= c && c <= 'z':
		return uint64(c-'a') + 10
	case 'A' <= c && c <= 'Z':
		return uint64(c-'A') + 10
	}
	return 255
}

// specHash reads hash_to_blob's "SHA256:" plus unpadded base64.
func specHash(cp string) ([32]byte, error) {
	var h [32]byte
	b64, ok := strings.CutPrefix(cp, "SHA256:")
	if !ok {
		return h, errors.New("unsupported hash algorithm")
	}
	for len(b64)%4 != 0 {
		b64 += "="
	}
	raw, err := base64.StdEncoding.DecodeString(stripSpace(b64))
	if err != nil {
		return h, fmt.Errorf("decode hash failed: %w", err)
	}
	if len(raw) != len(h) {
		return h, fmt.Errorf("hash is %d bytes, want %d", len(raw), len(h))
	}
	copy(h[:], raw)
	return h, nil
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool { return c == ' ' || '\t' <= c && c <= '\r' }

// stripSpace drops what isspace matches, as b64_pton skips it.
func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && isSpace(byte(r)) {
			return -1
		}
		return r
	}, s)
}

// readKey reads "type base64 [comment]" as sshkey_read does: the type
// must name the key's type (or, for RSA, a signature algorithm on it), the
// key must be one OpenSSH 9.2 loads, and a certificate's signature must
// verify.
func readKey(cp string) (ssh.PublicKey, error) {
	typ, rest := cutBlank(cp)
	b64, _ := cutBlank(rest)
	if typ == "" || b64 == "" {
		return nil, errors.New("want \"type base64 [comment]\"")
	}
	blob, err := base64.StdEncoding.DecodeString(stripSpace(b64))
	if err != nil {
		return nil, err
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, err
	}
	if !typeNameMatches(typ, key.Type()) {
		return nil, fmt.Errorf("type %s does not match the key's type %s", typ, key.Type())
	}
	if err := checkOpenSSHKey(key); err != nil {
		return nil, err
	}
	if cert, ok := key.(*ssh.Certificate); ok {
		if err := verifyCert(blob, cert); err != nil {
			return nil, err
		}
	}
	return key, nil
}

// cutBlank splits s at its first space or tab, dropping the blanks after.
func cutBlank(s string) (before, after string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t")
}

func typeNameMatches(name, keyType string) bool {
	if name == keyType {
		return true
	}
	switch keyType {
	case ssh.KeyAlgoRSA:
		return name == ssh.KeyAlgoRSASHA256 || name == ssh.KeyAlgoRSASHA512
	case ssh.CertAlgoRSAv01:
		return name == ssh.CertAlgoRSASHA256v01 || name == ssh.CertAlgoRSASHA512v01
	}
	return false
}

// verifyCert checks a certificate's signature over its encoding, blob.
func verifyCert(blob []byte, cert *ssh.Certificate) error {
	sig := ssh.Marshal(cert.Signature)
	tail := 4 + len(sig)
	if len(blob) < tail || !bytes.Equal(blob[len(blob)-len(sig):], sig) {
		return errors.New("certificate: cannot find its signature")
	}
	if err := cert.SignatureKey.Verify(blob[:len(blob)-tail], cert.Signature); err != nil {
		return fmt.Errorf("certificate signature: %w", err)
	}
	return nil
}
