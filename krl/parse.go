package krl

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// ParseError says where and why Parse refused a KRL.
type ParseError struct {
	// Section is the 1-based index of the section, 0 for the header.
	Section int
	// Type is the section's type byte.
	Type byte
	// Offset is the section's byte offset in the file.
	Offset int
	// Subsection is the 1-based index of the subsection within a
	// certificates section (0: none) and SubType its type.
	Subsection int
	SubType    byte
	// Err is what is wrong.
	Err error
}

func (e *ParseError) Error() string {
	if e.Section == 0 {
		return fmt.Sprintf("krl: header: %v", e.Err)
	}
	s := fmt.Sprintf("krl: section %d (%s) at byte %d", e.Section, sectionName(e.Type), e.Offset)
	if e.Subsection > 0 {
		s += fmt.Sprintf(": subsection %d (%s)", e.Subsection, subsectionName(e.SubType))
	}
	return s + ": " + e.Err.Error()
}

func (e *ParseError) Unwrap() error { return e.Err }

func sectionName(t byte) string {
	switch t {
	case sectionCerts:
		return "certificates"
	case sectionKeys:
		return "explicit keys"
	case sectionSHA1:
		return "SHA1 fingerprints"
	case sectionSignature:
		return "signature"
	case sectionSHA256:
		return "SHA256 fingerprints"
	case sectionExtension:
		return "extension"
	}
	return fmt.Sprintf("unknown type %d", t)
}

func subsectionName(t byte) string {
	switch t {
	case subList:
		return "0x20 serial list"
	case subRange:
		return "0x21 serial range"
	case subBitmap:
		return "0x22 bitmap"
	case subKeyID:
		return "0x23 key IDs"
	case subExtension:
		return "0x39 extension"
	}
	return fmt.Sprintf("unknown type 0x%02x", t)
}

var errTruncated = errors.New("truncated")

// Parse decodes a binary KRL. It accepts only what OpenSSH 9.2 loads (see
// the package documentation) and returns a *ParseError saying which
// section is wrong otherwise. Certificate sections for the same CA are
// merged. Signature sections are returned in Signatures, unverified.
func Parse(b []byte) (*KRL, error) {
	hdr := func(format string, args ...any) error {
		return &ParseError{Err: fmt.Errorf(format, args...)}
	}
	if len(b) > MaxSize {
		return nil, hdr("%d bytes, more than the %d OpenSSH loads", len(b), MaxSize)
	}
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, hdr("bad magic: not a binary KRL (sshd would read the file as a list of keys)")
	}
	in := cryptobyte.String(b[len(magic):])
	var (
		format            uint32
		generated         uint64
		reserved, comment cryptobyte.String
		k                 = new(KRL)
		p                 = &parser{k: k, serials: map[*CertSection][]SerialRange{}}
	)
	if !in.ReadUint32(&format) {
		return nil, hdr("truncated")
	}
	if format != 1 {
		return nil, hdr("format version %d, want 1", format)
	}
	if !in.ReadUint64(&k.Version) || !in.ReadUint64(&generated) || !in.ReadUint64(&k.Flags) ||
		!readString(&in, &reserved) || !readString(&in, &comment) {
		return nil, hdr("truncated")
	}
	if generated != 0 {
		k.Generated = time.Unix(int64(generated), 0).UTC()
	}
	c, err := cString(comment)
	if err != nil {
		return nil, hdr("comment: %v", err)
	}
	k.Comment = c
	for i := 1; !in.Empty(); i++ {
		off := len(b) - len(in)
		var typ byte
		var body cryptobyte.String
		if !in.ReadUint8(&typ) || !readString(&in, &body) {
			return nil, &ParseError{Section: i, Type: typ, Offset: off, Err: errTruncated}
		}
		p.sect, p.typ, p.off, p.sub, p.subType = i, typ, off, 0, 0
		if len(k.Signatures) > 0 && typ != sectionSignature {
			return nil, p.errf("a %s section after a signature section", sectionName(typ))
		}
		if err := p.section(typ, body, &in); err != nil {
			return nil, err
		}
	}
	for _, s := range k.Certs {
		if err := s.Serials.AddAll(p.serials[s]); err != nil {
			return nil, &ParseError{Err: err} // cannot happen: checked when read
		}
	}
	if len(k.Signatures) > 0 {
		live := false
		for _, s := range k.Signatures {
			live = live || !k.IsRevoked(s.Key)
		}
		if !live {
			return nil, &ParseError{Section: p.sect, Type: sectionSignature, Offset: p.off,
				Err: errors.New("every key that signed the KRL is revoked by it (OpenSSH refuses it)")}
		}
	}
	return k, nil
}

type parser struct {
	k       *KRL
	serials map[*CertSection][]SerialRange // read so far, merged at the end
	// where we are, for errors
	sect, off, sub int
	typ, subType   byte
}

func (p *parser) errf(format string, args ...any) error {
	return &ParseError{Section: p.sect, Type: p.typ, Offset: p.off, Subsection: p.sub, SubType: p.subType, Err: fmt.Errorf(format, args...)}
}

// section decodes one section. A signature section's second string follows
// its body in the file, so it reads that from rest.
func (p *parser) section(typ byte, body cryptobyte.String, rest *cryptobyte.String) error {
	switch typ {
	case sectionCerts:
		return p.certs(body)
	case sectionKeys:
		for n := 1; !body.Empty(); n++ {
			var blob cryptobyte.String
			if !readString(&body, &blob) {
				return p.errf("key %d: %v", n, errTruncated)
			}
			key, err := ssh.ParsePublicKey(blob)
			if err != nil {
				return p.errf("key %d: %v", n, err)
			}
			if _, ok := key.(*ssh.Certificate); ok {
				return p.errf("key %d is a certificate; sshd compares plain keys only", n)
			}
			if !bytes.Equal(key.Marshal(), blob) {
				return p.errf("key %d (%s) is not in canonical encoding; sshd would never match it", n, key.Type())
			}
			p.k.RevokedKeys = append(p.k.RevokedKeys, key)
		}
	case sectionSHA1:
		return hashes(p, body, &p.k.SHA1, func(h *[20]byte) []byte { return h[:] })
	case sectionSHA256:
		return hashes(p, body, &p.k.SHA256, func(h *[32]byte) []byte { return h[:] })
	case sectionSignature:
		key, err := parseCAKey(body)
		if err != nil {
			return p.errf("signature key: %v", err)
		}
		var sig cryptobyte.String
		if !readString(rest, &sig) {
			return p.errf("signature: %v", errTruncated)
		}
		for _, s := range p.k.Signatures {
			if sameCA(s.Key, key) {
				return p.errf("signed twice by the same key")
			}
		}
		p.k.Signatures = append(p.k.Signatures, &Signature{Key: key, Signature: bytes.Clone(sig)})
	case sectionExtension:
		var name cryptobyte.String
		var critical bool
		if readString(&body, &name) && readBool(&body, &critical) {
			return p.errf("extension %q (critical %v): OpenSSH 9.2 refuses extension sections", name, critical)
		}
		return p.errf("OpenSSH 9.2 refuses extension sections")
	default:
		return p.errf("unknown section type; OpenSSH refuses the KRL")
	}
	return nil
}

func hashes[H any](p *parser, body cryptobyte.String, dst *[]H, slice func(*H) []byte) error {
	for n := 1; !body.Empty(); n++ {
		var h cryptobyte.String
		if !readString(&body, &h) {
			return p.errf("hash %d: %v", n, errTruncated)
		}
		var x H
		if want := len(slice(&x)); len(h) != want {
			return p.errf("hash %d is %d bytes, want %d", n, len(h), want)
		}
		copy(slice(&x), h)
		*dst = append(*dst, x)
	}
	return nil
}

func (p *parser) certs(body cryptobyte.String) error {
	var caBlob, reserved cryptobyte.String
	if !readString(&body, &caBlob) || !readString(&body, &reserved) {
		return p.errf("CA key: %v", errTruncated)
	}
	var ca ssh.PublicKey
	if len(caBlob) > 0 {
		var err error
		if ca, err = parseCAKey(caBlob); err != nil {
			return p.errf("CA key: %v", err)
		}
	}
	s := p.k.CertsFor(ca)
	for p.sub = 1; !body.Empty(); p.sub++ {
		var sub cryptobyte.String
		p.subType = 0
		if !body.ReadUint8(&p.subType) || !readString(&body, &sub) {
			return p.errf("%v", errTruncated)
		}
		if err := p.subsection(s, sub); err != nil {
			return err
		}
	}
	p.sub = 0
	return nil
}

func (p *parser) subsection(s *CertSection, sub cryptobyte.String) error {
	add := func(first, last uint64) error {
		if err := checkRange(first, last); err != nil {
			return p.errf("%v", err)
		}
		p.serials[s] = append(p.serials[s], SerialRange{first, last})
		return nil
	}
	switch p.subType {
	case subList:
		for !sub.Empty() {
			var serial uint64
			if !sub.ReadUint64(&serial) {
				return p.errf("%d trailing bytes", len(sub))
			}
			if err := add(serial, serial); err != nil {
				return err
			}
		}
	case subRange:
		var first, last uint64
		if !sub.ReadUint64(&first) || !sub.ReadUint64(&last) {
			return p.errf("%v", errTruncated)
		}
		if err := add(first, last); err != nil {
			return err
		}
	case subBitmap:
		var offset uint64
		var mpint cryptobyte.String
		if !sub.ReadUint64(&offset) || !readString(&sub, &mpint) {
			return p.errf("%v", errTruncated)
		}
		if err := p.bitmap(offset, mpint, add); err != nil {
			return err
		}
	case subKeyID:
		for n := 1; !sub.Empty(); n++ {
			var id cryptobyte.String
			if !readString(&sub, &id) {
				return p.errf("key ID %d: %v", n, errTruncated)
			}
			str, err := cString(id)
			if err != nil {
				return p.errf("key ID %d: %v", n, err)
			}
			s.KeyIDs = append(s.KeyIDs, str)
		}
	case subExtension:
		return p.errf("OpenSSH 9.2 refuses certificate extension subsections")
	default:
		return p.errf("unknown subsection type; OpenSSH refuses the KRL")
	}
	if !sub.Empty() {
		return p.errf("%d trailing bytes", len(sub))
	}
	return nil
}

// bitmap decodes a serial bitmap: bit N (counting from the least
// significant bit of the big-endian mpint) revokes offset+N.
func (p *parser) bitmap(offset uint64, mpint []byte, add func(first, last uint64) error) error {
	// As sshbuf_get_bignum2_bytes_direct: no sign bit, at most 2048 bytes
	// plus a leading zero; leading zeros are allowed.
	if len(mpint) > 0 && mpint[0]&0x80 != 0 {
		return p.errf("negative mpint")
	}
	if len(mpint) > MaxBitmapBits/8+1 || len(mpint) == MaxBitmapBits/8+1 && mpint[0] != 0 {
		return p.errf("mpint of %d bytes, more than the %d bits OpenSSH loads", len(mpint), MaxBitmapBits)
	}
	for len(mpint) > 0 && mpint[0] == 0 {
		mpint = mpint[1:]
	}
	if len(mpint) == 0 {
		return nil
	}
	nbits := uint64(len(mpint)*8 - bits.LeadingZeros8(mpint[0]))
	if offset+(nbits-1) < offset {
		return p.errf("bitmap at offset %d of %d bits runs past serial 2^64-1", offset, nbits)
	}
	var runStart uint64
	inRun := false
	for i := uint64(0); i < uint64(len(mpint))*8; i++ {
		by := mpint[len(mpint)-1-int(i/8)]
		if i%8 == 0 && (!inRun && by == 0 || inRun && by == 0xff) {
			i += 7 // a whole byte that neither starts nor ends a run
			continue
		}
		set := by>>(i%8)&1 == 1
		switch {
		case set && !inRun:
			runStart, inRun = offset+i, true
		case !set && inRun:
			if err := add(runStart, offset+i-1); err != nil {
				return err
			}
			inRun = false
		}
	}
	if inRun {
		return add(runStart, offset+nbits-1)
	}
	return nil
}

// parseCAKey parses a CA or signature key as sshkey_from_blob in OpenSSH
// 9.2 would (see checkOpenSSHKey). Certificates are refused: OpenSSH never
// signs with them.
func parseCAKey(blob []byte) (ssh.PublicKey, error) {
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, err
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errors.New("a certificate, not a key")
	}
	if err := checkOpenSSHKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// checkOpenSSHKey refuses what x/crypto/ssh parses but OpenSSH 9.2 does
// not: key types it does not know, RSA keys under 1024 bits, certificates
// signed by certificates.
func checkOpenSSHKey(key ssh.PublicKey) error {
	if c, ok := key.(*ssh.Certificate); ok {
		if _, ok := c.SignatureKey.(*ssh.Certificate); ok {
			return errors.New("certificate signed by a certificate")
		}
		if err := checkOpenSSHKey(c.Key); err != nil {
			return err
		}
		return checkOpenSSHKey(c.SignatureKey)
	}
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoDSA:
		return nil
	case ssh.KeyAlgoRSA:
		if ck, ok := key.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 1024 {
				return fmt.Errorf("RSA key of %d bits; OpenSSH refuses keys under 1024", rk.N.BitLen())
			}
		}
		return nil
	}
	return fmt.Errorf("key type %s unknown to OpenSSH 9.2", key.Type())
}

// cString decodes a string as sshbuf_get_cstring does: a NUL is allowed
// only as the last byte, and then dropped.
func cString(b []byte) (string, error) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		if i != len(b)-1 {
			return "", fmt.Errorf("NUL byte at %d", i)
		}
		b = b[:i]
	}
	return string(b), nil
}

func readBool(s *cryptobyte.String, b *bool) bool {
	var v uint8
	if !s.ReadUint8(&v) {
		return false
	}
	*b = v != 0
	return true
}

// readString reads an SSH string: a uint32 length and that many bytes.
func readString(s *cryptobyte.String, out *cryptobyte.String) bool {
	var n uint32
	var b []byte
	if !s.ReadUint32(&n) || !s.ReadBytes(&b, int(n)) {
		return false
	}
	*out = b
	return true
}
