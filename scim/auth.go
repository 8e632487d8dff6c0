package scim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Client is a SCIM client allowed in: its name (the audit actor is
// "scim:NAME") and the SHA-256 of its bearer token.
type Client struct {
	Name        string
	TokenSHA256 [32]byte
}

// TokenPrefix starts every token NewToken makes, so that one found in a
// log or a paste is recognised for what it is.
const TokenPrefix = "devid-scim-"

// NewToken returns a new bearer token (TokenPrefix and 256 random bits,
// base64url) and its SHA-256 in hex, the form a configuration holds.
func NewToken() (token, sha256Hex string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("scim: new token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(sum[:]), nil
}

var clientNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ParseClient checks a configured client: a name of 1-63 characters
// a-z 0-9 . _ - (starting with a letter or digit), and the SHA-256 of its
// token as 64 hex digits.
func ParseClient(name, sha256Hex string) (Client, error) {
	if !clientNameRE.MatchString(name) {
		return Client{}, fmt.Errorf("scim: client name %q: want 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit", name)
	}
	b, err := hex.DecodeString(sha256Hex)
	if err != nil || len(b) != sha256.Size {
		return Client{}, fmt.Errorf("scim: client %s: tokenSHA256: want the 64 hex digits `devid-ca scim-token` prints", name)
	}
	c := Client{Name: name}
	copy(c.TokenSHA256[:], b)
	return c, nil
}

// authenticate returns the client whose token the Authorization header
// carries. Every configured hash is compared, in constant time, whichever
// matches.
func authenticate(clients []Client, header string) (Client, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return Client{}, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found Client
	ok = false
	for _, c := range clients {
		if subtle.ConstantTimeCompare(sum[:], c.TokenSHA256[:]) == 1 {
			found, ok = c, true
		}
	}
	return found, ok
}
