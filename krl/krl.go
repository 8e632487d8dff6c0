// Package krl reads, writes and queries OpenSSH key revocation lists (KRLs),
// the binary files sshd's RevokedKeys option points at.
//
// The format is OpenSSH's PROTOCOL.krl: a header (magic "SSHKRL\n\0",
// format version 1, KRL version, generation time, flags, a reserved string
// and a comment) followed by sections. A certificates section (type 1)
// names a CA key, or none for any CA, and revokes certificates it signed by
// serial number (subsections 0x20 list, 0x21 range, 0x22 bitmap) and by key
// ID (0x23). Explicit keys (2), SHA1 (3) and SHA256 (5) fingerprint sections
// revoke plain keys. Signature sections (4) are decoded and reported but not
// verified.
//
// # What sshd loads
//
// A KRL sshd cannot load locks everybody out: sshd then refuses every
// public-key login. Parse therefore accepts only what OpenSSH 9.2 loads,
// and says which section it refuses and why. OpenSSH 9.2 refuses, and so
// does Parse:
//
//   - any section or subsection type it does not know, including the
//     extension sections later versions of PROTOCOL.krl define;
//   - a serial list, range or bitmap that revokes serial 0, a range whose
//     start is above its end, and a bitmap that runs past 2^64-1;
//   - a bitmap of more than [MaxBitmapBits] bits (its mpint is capped at
//     2048 bytes plus a sign byte);
//   - a CA or signature key it cannot parse (RSA keys below 1024 bits
//     included), strings with a NUL inside, truncated input and trailing
//     bytes in any section or subsection;
//   - a non-signature section after a signature section, and a file over
//     128 MiB.
//
// Parse is stricter than sshd where it cannot matter to a login: explicit
// keys must be plain public keys in canonical encoding (sshd compares them
// byte for byte, so any other blob matches nothing), a CA key must not be
// a certificate, and keys must be ones x/crypto/ssh parses. It does not
// verify signatures, which OpenSSH 9.2 does and 9.4 and later refuse
// outright.
//
// Marshal writes only what OpenSSH 9.2 and later load: it splits bitmaps
// at [MaxBitmapBits] bits, cannot express serial 0 (a [SerialSet] refuses
// it), and writes neither extension nor signature sections. Its output is
// canonical (sections merged per CA, everything sorted and deduplicated)
// and, for the serials, of minimal size among encodings that choose per run
// of serials between list, range and bitmap: never larger than what
// `ssh-keygen -k` writes for the same revocations when ssh-keygen's output
// loads at all (ssh-keygen does not split bitmaps, so for dense serial sets
// it writes KRLs OpenSSH refuses).
//
// AddSpec and ParseSpec read the text format `ssh-keygen -k` takes; see
// [KRL.AddSpec] for its quirks.
package krl

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
)

// MaxBitmapBits is the largest serial bitmap OpenSSH loads: its mpint may
// hold 2048 bytes (sshbuf.h SSHBUF_MAX_BIGNUM) plus a leading zero.
const MaxBitmapBits = 16384

// MaxSize is the largest KRL file OpenSSH loads (sshbuf.h SSHBUF_SIZE_MAX).
const MaxSize = 0x8000000

// Section and subsection types (PROTOCOL.krl).
const (
	sectionCerts     = 1
	sectionKeys      = 2
	sectionSHA1      = 3
	sectionSignature = 4
	sectionSHA256    = 5
	sectionExtension = 255

	subList      = 0x20
	subRange     = 0x21
	subBitmap    = 0x22
	subKeyID     = 0x23
	subExtension = 0x39
)

const magic = "SSHKRL\n\x00"

// KRL is a key revocation list.
type KRL struct {
	// Version is the KRL version; ssh-keygen -z sets it. Nothing checks it.
	Version uint64
	// Generated is when the KRL was made; the zero Time is written as 0.
	Generated time.Time
	// Flags is the header's flags word. PROTOCOL.krl defines none and
	// OpenSSH ignores it.
	Flags uint64
	// Comment is free text (no NUL bytes).
	Comment string
	// Certs revoke certificates, by CA. Parse merges sections for the same
	// CA into one, as sshd does.
	Certs []*CertSection
	// RevokedKeys are plain keys revoked whatever certificate they carry.
	RevokedKeys []ssh.PublicKey
	// SHA1 and SHA256 revoke plain keys by the hash of their wire encoding.
	SHA1   [][20]byte
	SHA256 [][32]byte
	// Signatures are the signature sections Parse found, unverified.
	// Marshal refuses a KRL that has any.
	Signatures []*Signature
}

// CertSection revokes certificates signed by one CA.
type CertSection struct {
	// CA is the CA's public key; nil means any CA (a wildcard section).
	CA ssh.PublicKey
	// Serials are the revoked certificate serial numbers.
	Serials SerialSet
	// KeyIDs are revoked certificate key IDs (no NUL bytes).
	KeyIDs []string
}

// Signature is an embedded KRL signature section: the key that signed and
// its signature over the KRL up to and including the key.
type Signature struct {
	Key       ssh.PublicKey
	Signature []byte // wire-format SSH signature, as found
}

// CertsFor returns the section for ca (nil: the wildcard section), adding
// an empty one if there is none.
func (k *KRL) CertsFor(ca ssh.PublicKey) *CertSection {
	for _, s := range k.Certs {
		if sameCA(s.CA, ca) {
			return s
		}
	}
	s := &CertSection{CA: ca}
	k.Certs = append(k.Certs, s)
	return s
}

// IsRevoked reports whether sshd, given this KRL as RevokedKeys, refuses
// key. It checks what sshd checks (krl.c ssh_krl_check_key): the key's
// SHA1 and SHA256 fingerprints and its plain wire encoding; for a
// certificate, also its key ID and serial (serial 0 never matches) in the
// sections for its CA and the wildcard section, and the CA key's own
// fingerprints and encoding. A certificate's fingerprints are those of the
// key it certifies.
func (k *KRL) IsRevoked(key ssh.PublicKey) bool {
	cert, isCert := key.(*ssh.Certificate)
	if !isCert {
		return k.plainRevoked(key)
	}
	if k.plainRevoked(cert.Key) || k.plainRevoked(cert.SignatureKey) {
		return true
	}
	var caBlob []byte
	for _, s := range k.Certs {
		if s.CA != nil {
			if caBlob == nil {
				caBlob = cert.SignatureKey.Marshal()
			}
			if !bytes.Equal(s.CA.Marshal(), caBlob) {
				continue
			}
		}
		if slices.Contains(s.KeyIDs, cert.KeyId) {
			return true
		}
		if cert.Serial != 0 && s.Serials.Contains(cert.Serial) {
			return true
		}
	}
	return false
}

func (k *KRL) plainRevoked(key ssh.PublicKey) bool {
	if len(k.SHA1) == 0 && len(k.SHA256) == 0 && len(k.RevokedKeys) == 0 {
		return false
	}
	blob := key.Marshal()
	if len(k.SHA1) > 0 && slices.Contains(k.SHA1, sha1.Sum(blob)) {
		return true
	}
	if len(k.SHA256) > 0 && slices.Contains(k.SHA256, sha256.Sum256(blob)) {
		return true
	}
	return slices.ContainsFunc(k.RevokedKeys, func(r ssh.PublicKey) bool { return bytes.Equal(r.Marshal(), blob) })
}

// sameCA compares two CA keys by their wire encoding; nil is the wildcard.
func sameCA(a, b ssh.PublicKey) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return bytes.Equal(a.Marshal(), b.Marshal())
}

// plainKey is key without its certificate, if it is one.
func plainKey(key ssh.PublicKey) ssh.PublicKey {
	if c, ok := key.(*ssh.Certificate); ok {
		return c.Key
	}
	return key
}
