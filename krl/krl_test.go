package krl

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSerialSet checks Add, AddAll and Contains against a plain map, with
// ranges touching, overlapping and at the ends of uint64.
func TestSerialSet(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	atMax := 0
	for round := range 200 {
		var s, bulk SerialSet
		model := map[uint64]bool{}
		var added []SerialRange
		base, spread := uint64(1), uint64(200)
		if round%3 == 0 {
			base, spread = math.MaxUint64-60, 61 // ranges end at 2^64-1
		}
		for range rng.IntN(30) {
			first := base + rng.Uint64N(spread)
			last := first + rng.Uint64N(min(12, math.MaxUint64-first+1))
			if err := s.Add(first, last); err != nil {
				t.Fatal(err)
			}
			added = append(added, SerialRange{first, last})
			for x := first; ; x++ {
				model[x] = true
				if x == last {
					break
				}
			}
		}
		if err := bulk.AddAll(added); err != nil {
			t.Fatal(err)
		}
		if !s.Equal(&bulk) {
			t.Fatalf("Add %v != AddAll %v", s.r, bulk.r)
		}
		for i := 1; i < len(s.r); i++ {
			if s.r[i].First <= s.r[i-1].Last+1 {
				t.Fatalf("ranges not disjoint and apart: %v", s.r)
			}
		}
		for o := range uint64(216) {
			x := base - 1 + o // wraps to 0, 1, ... near 2^64
			if s.Contains(x) != model[x] {
				t.Fatalf("Contains(%d) = %v, want %v; set %v", x, s.Contains(x), model[x], s.r)
			}
		}
		if s.Count() != uint64(len(model)) {
			t.Fatalf("Count %d, want %d", s.Count(), len(model))
		}
		if model[math.MaxUint64] {
			atMax++
		}
	}
	if atMax < 5 {
		t.Errorf("only %d rounds reached 2^64-1", atMax)
	}
	var s SerialSet
	if err := s.Add(0, 5); !errors.Is(err, ErrSerialZero) {
		t.Errorf("Add(0, 5): %v, want ErrSerialZero", err)
	}
	if err := s.Add(9, 4); err == nil || !strings.Contains(err.Error(), "start 9 > end 4") {
		t.Errorf("Add(9, 4): %v", err)
	}
	if err := s.AddAll([]SerialRange{{1, 2}, {0, 0}}); !errors.Is(err, ErrSerialZero) {
		t.Errorf("AddAll with 0: %v", err)
	}
	if err := s.Add(1, math.MaxUint64); err != nil || s.Count() != math.MaxUint64 || !s.Contains(math.MaxUint64) || s.Contains(0) {
		t.Errorf("full range: %v %v", err, s.r)
	}
}

// richKRL has one of everything Marshal writes.
func richKRL(t testing.TB) (*KRL, ssh.Signer, ssh.Signer) {
	ca, ca2 := newSigner(t), newSigner(t)
	k := &KRL{Version: 7, Generated: time.Unix(1700000000, 0).UTC(), Flags: 0, Comment: "devid test"}
	s := k.CertsFor(ca.PublicKey())
	for _, r := range []SerialRange{{1, 1}, {3, 4}, {100, 200}, {1000, 1000}, {1002, 1002}, {1010, 1020}, {math.MaxUint64, math.MaxUint64}} {
		if err := s.Serials.Add(r.First, r.Last); err != nil {
			t.Fatal(err)
		}
	}
	s.KeyIDs = []string{"laptop-42", "", "web-1"}
	w := k.CertsFor(nil)
	w.KeyIDs = []string{"stolen"}
	if err := w.Serials.Add(5, 5); err != nil {
		t.Fatal(err)
	}
	k.CertsFor(ca2.PublicKey()).KeyIDs = []string{"x"}
	plain := newSigner(t).PublicKey()
	k.RevokedKeys = []ssh.PublicKey{plain}
	k.SHA1 = [][20]byte{sha1.Sum([]byte("a"))}
	k.SHA256 = [][32]byte{sha256.Sum256([]byte("b"))}
	return k, ca, ca2
}

// TestRoundTrip: Marshal then Parse gives back the same revocations, and
// Marshal of that gives the same bytes.
func TestRoundTrip(t *testing.T) {
	k, _, _ := richKRL(t)
	_, k2 := roundTrip(t, k)
	if len(k2.Certs) != 3 || k2.Certs[0].CA != nil {
		t.Fatalf("want 3 certificate sections, the wildcard first: %+v", k2.Certs)
	}
}

// TestMarshalCanonical: the order sections, IDs and keys were added in,
// duplicates and split sections for one CA do not change the bytes.
func TestMarshalCanonical(t *testing.T) {
	k, ca, _ := richKRL(t)
	want, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(k.Certs)
	for _, s := range k.Certs {
		slices.Reverse(s.KeyIDs)
		s.KeyIDs = append(s.KeyIDs, s.KeyIDs...)
	}
	extra := &CertSection{CA: ca.PublicKey()}
	if err := extra.Serials.Add(150, 160); err != nil { // already covered
		t.Fatal(err)
	}
	k.Certs = append(k.Certs, extra)
	k.RevokedKeys = append(k.RevokedKeys, k.RevokedKeys...)
	k.SHA1 = append(k.SHA1, k.SHA1...)
	k.CertsFor(newSigner(t).PublicKey()) // empty: left out
	got, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reordered, duplicated KRL marshals differently")
	}
}

func TestMarshalRefuses(t *testing.T) {
	ca := newSigner(t)
	cert := newCert(t, ca, newSigner(t).PublicKey(), 1, "x")
	for name, k := range map[string]*KRL{
		"signature":      {Signatures: []*Signature{{Key: ca.PublicKey()}}},
		"cert as key":    {RevokedKeys: []ssh.PublicKey{cert}},
		"NUL in comment": {Comment: "a\x00b"},
		"NUL in key ID":  {Certs: []*CertSection{{KeyIDs: []string{"a\x00"}}}},
	} {
		if _, err := k.Marshal(); err == nil || !strings.HasPrefix(err.Error(), "krl: ") {
			t.Errorf("%s: Marshal error %v", name, err)
		}
	}
}

// TestIsRevoked covers every way sshd refuses a key.
func TestIsRevoked(t *testing.T) {
	ca, other := newSigner(t), newSigner(t)
	user := newSigner(t).PublicKey()
	cert := func(s ssh.Signer, serial uint64, id string) *ssh.Certificate {
		return newCert(t, s, user, serial, id)
	}
	k := &KRL{}
	if err := k.CertsFor(ca.PublicKey()).Serials.Add(10, 20); err != nil {
		t.Fatal(err)
	}
	k.CertsFor(ca.PublicKey()).KeyIDs = []string{"bad"}
	k.CertsFor(nil).KeyIDs = []string{"everywhere"}
	if err := k.CertsFor(nil).Serials.Add(1000, 1000); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		key  ssh.PublicKey
		want bool
	}{
		{"serial in range", cert(ca, 15, "a"), true},
		{"serial after range", cert(ca, 21, "a"), false},
		{"serial 0 never matches", cert(ca, 0, "a"), false},
		{"key ID", cert(ca, 5, "bad"), true},
		{"key ID of another CA", cert(other, 5, "bad"), false},
		{"serial of another CA", cert(other, 15, "a"), false},
		{"wildcard key ID", cert(other, 5, "everywhere"), true},
		{"wildcard serial", cert(other, 1000, "a"), true},
		{"plain key", user, false},
	} {
		if got := k.IsRevoked(c.key); got != c.want {
			t.Errorf("%s: IsRevoked %v, want %v", c.name, got, c.want)
		}
	}
	c := cert(other, 1, "a")
	for name, k := range map[string]*KRL{
		"key explicitly": {RevokedKeys: []ssh.PublicKey{user}},
		"key by SHA1":    {SHA1: [][20]byte{sha1.Sum(user.Marshal())}},
		"key by SHA256":  {SHA256: [][32]byte{sha256.Sum256(user.Marshal())}},
		"CA explicitly":  {RevokedKeys: []ssh.PublicKey{other.PublicKey()}},
		"CA by SHA256":   {SHA256: [][32]byte{sha256.Sum256(other.PublicKey().Marshal())}},
		"CA by SHA1":     {SHA1: [][20]byte{sha1.Sum(other.PublicKey().Marshal())}},
	} {
		if !k.IsRevoked(c) {
			t.Errorf("%s: certificate not revoked", name)
		}
	}
	if !(&KRL{RevokedKeys: []ssh.PublicKey{user}}).IsRevoked(user) {
		t.Error("plain key not revoked")
	}
}

// TestParseSections decodes hand-made sections of every type.
func TestParseSections(t *testing.T) {
	ca := newSigner(t)
	caBlob := ca.PublicKey().Marshal()
	key := newSigner(t).PublicKey()
	h1, h2 := sha1.Sum([]byte("x")), sha256.Sum256([]byte("y"))
	b := file(
		certs(caBlob,
			sect(subList, u64(7, 3, 9)),
			sect(subRange, u64(100, 110)),
			bitmap(200, 0, 1, 2, 5, 15),                            // 200-202, 205, 215
			sect(subKeyID, str([]byte("a")), str([]byte("b\x00"))), // a trailing NUL is dropped
		),
		certs(nil, sect(subKeyID, str([]byte("w")))),
		certs(caBlob, sect(subRange, u64(111, 120))), // merged with the first
		sect(sectionKeys, str(key.Marshal())),
		sect(sectionSHA1, str(h1[:])),
		sect(sectionSHA256, str(h2[:])),
	)
	k, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Certs) != 2 {
		t.Fatalf("%d certificate sections, want 2", len(k.Certs))
	}
	got := slices.Collect(k.Certs[0].Serials.Ranges())
	want := []SerialRange{{3, 3}, {7, 7}, {9, 9}, {100, 120}, {200, 202}, {205, 205}, {215, 215}}
	if !slices.Equal(got, want) {
		t.Errorf("serials %v, want %v", got, want)
	}
	if !slices.Equal(k.Certs[0].KeyIDs, []string{"a", "b"}) || k.Certs[1].CA != nil || !slices.Equal(k.Certs[1].KeyIDs, []string{"w"}) {
		t.Errorf("key IDs %q, wildcard %+v", k.Certs[0].KeyIDs, k.Certs[1])
	}
	if len(k.RevokedKeys) != 1 || !bytes.Equal(k.RevokedKeys[0].Marshal(), key.Marshal()) || k.SHA1[0] != h1 || k.SHA256[0] != h2 {
		t.Errorf("keys %v sha1 %x sha256 %x", k.RevokedKeys, k.SHA1, k.SHA256)
	}

	// A signature section is reported, not verified.
	signed := append(file(certs(caBlob, sect(subKeyID, str([]byte("a"))))), sect(sectionSignature, caBlob)...)
	signed = append(signed, str([]byte("not checked"))...)
	k, err = Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Signatures) != 1 || string(k.Signatures[0].Signature) != "not checked" {
		t.Errorf("signatures %+v", k.Signatures)
	}
}

// badKRL is an input Parse refuses, with what it must say. OpenSSH 9.2
// refuses it too, unless it is in stricterThanSSHD.
type badKRL struct {
	name, want string
	b          []byte
}

// stricterThanSSHD are the malformed inputs OpenSSH 9.2 loads (it never
// parses explicit keys, and takes a certificate for a CA key) that Parse
// refuses: none can revoke anything.
var stricterThanSSHD = map[string]bool{
	"CA key is a certificate":       true,
	"explicit key is a certificate": true,
	"explicit key garbage":          true,
}

// malformed are the inputs Parse refuses; the oracle test checks what
// ssh-keygen makes of each.
func malformed(t testing.TB) []badKRL {
	ca := newSigner(t)
	caBlob := ca.PublicKey().Marshal()
	valid := file(certs(caBlob, sect(subList, u64(5))))
	// An RSA public key of 768 bits (crypto/rsa no longer makes them).
	n := new(big.Int).SetBit(big.NewInt(1), 767, 1)
	smallPub, err := ssh.NewPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	cert := newCert(t, ca, newSigner(t).PublicKey(), 1, "c")
	bits16385 := make([]int, 0, 16385)
	for i := 0; i < 16385; i += 2 {
		bits16385 = append(bits16385, i)
	}
	negative := sect(subBitmap, u64(1), str([]byte{0x80, 0x01}))
	oversize := sect(subBitmap, u64(1), str(append([]byte{0}, bytes.Repeat([]byte{0}, 2049)...)))
	h := sha256.Sum256(nil)
	sig := append(sect(sectionSignature, caBlob), str([]byte("s"))...)
	return []badKRL{
		{"bad magic", "bad magic", append([]byte("SSHKRL\n\x01"), valid[8:]...)},
		{"text list", "bad magic", []byte("# revoked keys\n")},
		{"format version 2", "format version 2", append(append([]byte(magic), 0, 0, 0, 2), valid[12:]...)},
		{"truncated header", "header: truncated", valid[:30]},
		{"truncated section", "section 1 (certificates) at byte 44: truncated", valid[:len(valid)-1]},
		{"trailing byte in list", "subsection 1 (0x20 serial list): 1 trailing bytes", file(certs(caBlob, sect(subList, u64(5), []byte{1})))},
		{"trailing bytes in range", "0x21 serial range): 8 trailing bytes", file(certs(caBlob, sect(subRange, u64(5, 6, 7))))},
		{"trailing bytes in bitmap", "0x22 bitmap): 1 trailing bytes", file(certs(caBlob, sect(subBitmap, u64(5), str([]byte{2}), []byte{0})))},
		{"truncated range", "0x21 serial range): truncated", file(certs(caBlob, sect(subRange, u64(5))))},
		{"unknown section", "section 1 (unknown type 6)", file(sect(6))},
		{"extension section", `extension "bloom-explicit-key" (critical false): OpenSSH 9.2 refuses`, file(sect(sectionExtension, str([]byte("bloom-explicit-key")), []byte{0}, str()))},
		{"certificate extension", "0x39 extension): OpenSSH 9.2 refuses", file(certs(caBlob, sect(subExtension, str([]byte("x")), []byte{0}, str())))},
		{"unknown subsection", "subsection 2 (unknown type 0x24)", file(certs(caBlob, sect(subList, u64(5)), sect(0x24)))},
		{"bitmap of 16385 bits", "0x22 bitmap): mpint of 2049 bytes, more than the 16384 bits", file(certs(caBlob, bitmap(1, bits16385...)))},
		{"bitmap mpint of 2050 bytes", "mpint of 2050 bytes", file(certs(caBlob, oversize))},
		{"negative bitmap", "negative mpint", file(certs(caBlob, negative))},
		{"serial 0 in list", "0x20 serial list): serial 0 cannot be revoked", file(certs(caBlob, sect(subList, u64(3, 0))))},
		{"range from 0", "0x21 serial range): serial 0 cannot be revoked", file(certs(caBlob, sect(subRange, u64(0, 4))))},
		{"bitmap at 0", "0x22 bitmap): serial 0 cannot be revoked", file(certs(caBlob, bitmap(0, 0, 3)))},
		{"range start > end", "serial range start 9 > end 4", file(certs(caBlob, sect(subRange, u64(9, 4))))},
		{"bitmap past 2^64-1", "runs past serial 2^64-1", file(certs(caBlob, bitmap(math.MaxUint64, 1)))},
		{"SHA256 of 31 bytes", "hash 1 is 31 bytes, want 32", file(sect(sectionSHA256, str(h[:31])))},
		{"SHA1 of 32 bytes", "hash 2 is 32 bytes, want 20", file(sect(sectionSHA1, str(h[:20]), str(h[:])))},
		{"NUL inside a key ID", "key ID 1: NUL byte at 1", file(certs(caBlob, sect(subKeyID, str([]byte("a\x00b")))))},
		{"NUL inside the comment", "header: comment: NUL byte", append(append(valid[:40:40], str([]byte("a\x00b"))...), valid[44:]...)},
		{"CA key garbage", "CA key:", file(certs([]byte("garbage")))},
		{"CA key RSA 768", "RSA key of 768 bits", file(certs(smallPub.Marshal()))},
		{"section after signature", "a certificates section after a signature section", append(file(sig), certs(caBlob)...)},
		{"signed twice by one key", "signed twice by the same key", file(sig, sig)},
		{"signature truncated", "signature: truncated", file(sect(sectionSignature, caBlob))},
		{"signing key revoked", "every key that signed the KRL is revoked", file(sect(sectionKeys, str(caBlob)), sig)},
		{"CA key is a certificate", "a certificate, not a key", file(certs(cert.Marshal()))},
		{"explicit key is a certificate", "key 1 is a certificate", file(sect(sectionKeys, str(cert.Marshal())))},
		{"explicit key garbage", "section 1 (explicit keys) at byte 44: key 1:", file(sect(sectionKeys, str([]byte("junk"))))},
		{"explicit key truncated", "key 1: truncated", file(sect(sectionKeys, []byte{0, 0, 0, 9}))},
	}
}

// TestParseMalformed: each malformed input is refused, saying where.
func TestParseMalformed(t *testing.T) {
	for _, c := range malformed(t) {
		_, err := Parse(c.b)
		if err == nil {
			t.Errorf("%s: parsed", c.name)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "krl: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want a *ParseError containing %q", c.name, err, c.want)
		}
	}
}

// edgeValid are inputs at the edges of what OpenSSH 9.2 loads.
func edgeValid(t testing.TB) []struct {
	name string
	b    []byte
	want []SerialRange
} {
	caBlob := newSigner(t).PublicKey().Marshal()
	every2 := make([]int, 0, 8192)
	for i := 1; i < 16384; i += 2 {
		every2 = append(every2, i)
	}
	return []struct {
		name string
		b    []byte
		want []SerialRange
	}{
		{"bitmap of 16384 bits", file(certs(caBlob, bitmap(10, every2...))), nil},
		{"bitmap at 0, bit 0 clear", file(certs(caBlob, bitmap(0, 1, 2))), []SerialRange{{1, 2}}},
		{"bitmap with leading zeros", file(certs(caBlob, sect(subBitmap, u64(4), str([]byte{0, 0, 0, 5})))), []SerialRange{{4, 4}, {6, 6}}},
		{"empty bitmap", file(certs(caBlob, sect(subBitmap, u64(4), str()))), []SerialRange{}},
		{"bitmap ending at 2^64-1", file(certs(caBlob, bitmap(math.MaxUint64-1, 0, 1))), []SerialRange{{math.MaxUint64 - 1, math.MaxUint64}}},
		{"empty sections", file(certs(caBlob), sect(sectionKeys), sect(sectionSHA1), sect(sectionSHA256)), []SerialRange{}},
		{"reserved strings with content", append(append(file()[:36:36], str([]byte("rsv"))...), append(str(), certs(caBlob, sect(subRange, u64(1, 2)))...)...), []SerialRange{{1, 2}}},
		{"overlapping list and range", file(certs(caBlob, sect(subList, u64(5, 5, 3)), sect(subRange, u64(4, 9)))), []SerialRange{{3, 9}}},
	}
}

func TestParseEdges(t *testing.T) {
	for _, c := range edgeValid(t) {
		k, err := Parse(c.b)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.want == nil {
			continue
		}
		var got []SerialRange
		for _, s := range k.Certs {
			got = append(got, slices.Collect(s.Serials.Ranges())...)
		}
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("%s: serials %v, want %v", c.name, got, c.want)
		}
	}
}

// TestParseTruncatedEverywhere: every cut of a valid KRL that does not
// fall on a section boundary is refused.
func TestParseTruncatedEverywhere(t *testing.T) {
	k, _, _ := richKRL(t)
	b, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	boundaries := map[int]bool{len(b): true}
	off := len(magic) + 4 + 24
	off += 4 + int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
	off += 4 + int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
	for off < len(b) {
		boundaries[off] = true
		off += 1 + 4 + int(uint32(b[off+1])<<24|uint32(b[off+2])<<16|uint32(b[off+3])<<8|uint32(b[off+4]))
	}
	for n := 0; n < len(b); n++ {
		_, err := Parse(b[:n])
		if boundaries[n] != (err == nil) {
			t.Errorf("cut at %d of %d: error %v (section boundary %v)", n, len(b), err, boundaries[n])
		}
	}
}
