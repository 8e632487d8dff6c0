// Package enroltoken is the format of devid's one-time enrolment tokens:
// the secret an operator hands a device registered without its EK
// (pending), which the device presents at its first attestation so that
// devid-ca binds that device's record to its TPM.
//
// A token is text, one line, safe in a shell, a JSON string and a
// configuration file:
//
//	devid-enrol-<58 characters of a-z and 2-7>
//
// The characters are the unpadded, lower-case base32 (RFC 4648) of 36
// bytes: 32 random bytes, then the first 4 bytes of SHA-256 of them, a
// check that catches a token mangled in a copy before anything is asked of
// the CA. Parse accepts exactly that form and nothing else: no white space,
// no upper case, no padding, the 2 bits that end the encoding zero, the
// check right.
//
// The CA keeps only a token's Hash (SHA-256 of its text); logs and the
// audit trail name a token by Hash.Short. A Token's String never shows the
// secret either: only Text does.
package enroltoken

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Prefix starts every token: it says what the secret is wherever it is
// found (a configuration file, a chat, a secret scanner's rules).
const Prefix = "devid-enrol-"

const (
	secretLen = 32
	checkLen  = 4
	// Len is the length of a token's text.
	Len = len(Prefix) + (8*(secretLen+checkLen)+4)/5
)

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Token is an enrolment token. The zero Token is not one.
type Token struct{ text string }

// New makes a new random token.
func New() (Token, error) {
	var raw [secretLen + checkLen]byte
	if _, err := rand.Read(raw[:secretLen]); err != nil {
		return Token{}, fmt.Errorf("enroltoken: %w", err)
	}
	sum := sha256.Sum256(raw[:secretLen])
	copy(raw[secretLen:], sum[:checkLen])
	return Token{Prefix + b32.EncodeToString(raw[:])}, nil
}

// ErrMalformed is what every Parse error matches (errors.Is).
var ErrMalformed = errors.New("enroltoken: malformed token")

type parseError struct{ msg string }

func (e *parseError) Error() string { return "enroltoken: malformed token: " + e.msg }
func (e *parseError) Is(target error) bool {
	return target == ErrMalformed
}

func malformed(format string, args ...any) error {
	return &parseError{fmt.Sprintf(format, args...)}
}

// Parse checks a token's text. Its errors never quote the text: it is a
// secret, or a mistyped one.
func Parse(s string) (Token, error) {
	if !strings.HasPrefix(s, Prefix) {
		return Token{}, malformed("it does not start with %q", Prefix)
	}
	body := s[len(Prefix):]
	if len(s) != Len {
		return Token{}, malformed("%d characters, want %d (%q and %d more)", len(s), Len, Prefix, Len-len(Prefix))
	}
	for i := 0; i < len(body); i++ {
		if c := body[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return Token{}, malformed("character %d is not one of a-z and 2-7", len(Prefix)+i+1)
		}
	}
	raw, err := b32.DecodeString(body)
	if err != nil || len(raw) != secretLen+checkLen || b32.EncodeToString(raw) != body {
		return Token{}, malformed("not the encoding of a token (its last character is wrong)")
	}
	sum := sha256.Sum256(raw[:secretLen])
	if !bytes.Equal(sum[:checkLen], raw[secretLen:]) {
		return Token{}, malformed("its check does not match: a character was changed, or it was not copied whole")
	}
	return Token{s}, nil
}

// ParseFile parses a token file's content: the token, with white space
// around it (a final newline) allowed, nothing else.
func ParseFile(data []byte) (Token, error) {
	return Parse(strings.TrimSpace(string(data)))
}

// ReadFile reads a token from file, as ParseFile does, refusing a file
// that others than its owner may read or write (group or other
// permission bits set): the token is a secret. A missing file is an error
// that matches fs.ErrNotExist.
func ReadFile(file string) (Token, error) {
	f, err := os.Open(file)
	if err != nil {
		return Token{}, fmt.Errorf("enroltoken: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Token{}, fmt.Errorf("enroltoken: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return Token{}, fmt.Errorf("enroltoken: %s: mode %04o lets others than its owner read or change this secret: chmod 600 %s", file, m, file)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return Token{}, fmt.Errorf("enroltoken: %s: %w", file, err)
	}
	t, err := ParseFile(b)
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", file, err)
	}
	return t, nil
}

// Text is the token itself, the secret: to hand to the device, never to
// log.
func (t Token) Text() string { return t.text }

// IsZero says whether t is the zero Token.
func (t Token) IsZero() bool { return t.text == "" }

// String names the token without revealing it: its prefix and its hash's
// Short form.
func (t Token) String() string {
	if t.text == "" {
		return "(no token)"
	}
	return Prefix + "… (sha256 " + t.Hash().Short() + ")"
}

// GoString is String: %#v does not reveal the token either.
func (t Token) GoString() string { return t.String() }

// Hash is the SHA-256 of a token's text: what the CA stores and looks a
// token up by.
type Hash [sha256.Size]byte

// Hash returns the token's Hash.
func (t Token) Hash() Hash { return sha256.Sum256([]byte(t.text)) }

// String is the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short is the first 12 hex digits: enough to tell tokens apart in a log
// or the audit trail, far too little to find the token from.
func (h Hash) Short() string { return h.String()[:12] }

// ParseHash reads a Hash in hex (String's form).
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("enroltoken: hash %q: want %d hex digits", s, 2*len(h))
	}
	copy(h[:], b)
	return h, nil
}
