// Package idform tells whether a string has the form of a device ID,
// without what package deviceid needs to compute one.
//
// Package deviceid parses Endorsement Keys with crypto/x509, which imports
// net, which makes every binary that imports it dynamically linked against
// the C library (with cgo enabled, the default) and slower to start. The
// principals helper, which sshd executes twice per login, only needs to
// recognise a device ID: it imports this package instead. deviceid.Prefix and
// deviceid.Valid are the same constant and function.
package idform

import (
	"encoding/base64"
	"strings"
)

// Prefix starts every device ID.
const Prefix = "urn:ek:sha256:"

// Valid reports whether s has the form of a device ID: Prefix followed by
// the standard base64 encoding, padded and canonical, of 32 bytes (a SHA-256
// digest).
func Valid(s string) bool {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok || len(rest) != 44 {
		return false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	return err == nil && len(b) == 32
}
