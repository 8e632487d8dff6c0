package krl

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestStrtoull(t *testing.T) {
	for _, c := range []struct {
		in     string
		v      uint64
		end    int
		erange bool
	}{
		{"5", 5, 1, false},
		{"010", 8, 3, false},
		{"08", 0, 1, false},
		{"0x1f", 31, 4, false},
		{"0X1F-", 31, 4, false},
		{"0x", 0, 1, false},
		{"0xg", 0, 1, false},
		{"0", 0, 1, false},
		{"+5", 5, 2, false},
		{"-1", math.MaxUint64, 2, false},
		{"-0", 0, 2, false},
		{" \v5", 5, 3, false},
		{"", 0, 0, false},
		{"-", 0, 0, false},
		{"abc", 0, 0, false},
		{"18446744073709551615", math.MaxUint64, 20, false},
		{"18446744073709551616", math.MaxUint64, 20, true},
		{"-18446744073709551616", math.MaxUint64, 21, true},
		{"-18446744073709551615", 1, 21, false},
		{"0xffffffffffffffff", math.MaxUint64, 18, false},
		{"0x10000000000000000", math.MaxUint64, 19, true},
		{"01777777777777777777777", math.MaxUint64, 23, false},
		{"02000000000000000000000", math.MaxUint64, 23, true},
	} {
		v, end, erange := strtoull(c.in)
		if v != c.v || end != c.end || erange != c.erange {
			t.Errorf("strtoull(%q) = %d, %d, %v; want %d, %d, %v", c.in, v, end, erange, c.v, c.end, c.erange)
		}
	}
}

// specCase is one spec line and what ssh-keygen -k -s CA makes of it: an
// error (a substring of ours) or the serials, key IDs and keys revoked.
type specCase struct {
	line    string
	err     string
	serials []SerialRange // under the CA
	ids     []string      // under the CA
	check   func(t *testing.T, k *KRL)
}

func specCases(t testing.TB, ca ssh.Signer) []specCase {
	user := newSigner(t).PublicKey()
	otherCA := newSigner(t)
	cert := newCert(t, otherCA, user, 77, "c77")
	cert0 := newCert(t, otherCA, user, 0, "c0")
	forged := newCert(t, otherCA, user, 78, "forged")
	forged.Serial = 79 // the signature no longer matches
	sum := sha256.Sum256(user.Marshal())
	fp := strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	hasKey := func(want ssh.PublicKey) func(t *testing.T, k *KRL) {
		return func(t *testing.T, k *KRL) {
			if len(k.RevokedKeys) != 1 || !sameCA(k.RevokedKeys[0], want) {
				t.Errorf("revoked keys %v, want %s", k.RevokedKeys, want.Type())
			}
		}
	}
	hasSHA256 := func(t *testing.T, k *KRL) {
		if !slices.Equal(k.SHA256, [][32]byte{sum}) {
			t.Errorf("SHA256 %x", k.SHA256)
		}
	}
	underOther := func(serials []SerialRange, ids []string) func(t *testing.T, k *KRL) {
		return func(t *testing.T, k *KRL) {
			s := k.CertsFor(otherCA.PublicKey())
			if !slices.Equal(slices.Collect(s.Serials.Ranges()), serials) || !slices.Equal(s.KeyIDs, ids) {
				t.Errorf("other CA: serials %v IDs %q", s.Serials.r, s.KeyIDs)
			}
		}
	}
	return []specCase{
		{line: "serial: 5", serials: []SerialRange{{5, 5}}},
		{line: "serial: 010", serials: []SerialRange{{8, 8}}},
		{line: "SERIAL:0x20-0x30   # trailing", serials: []SerialRange{{32, 48}}},
		{line: "  serial: 7\t ", serials: []SerialRange{{7, 7}}},
		{line: "serial:\t 0X1f", serials: []SerialRange{{31, 31}}},
		{line: "serial: -1", serials: []SerialRange{{math.MaxUint64, math.MaxUint64}}},
		{line: "serial: 1--3", serials: []SerialRange{{1, math.MaxUint64 - 2}}},
		{line: "serial: +5", serials: []SerialRange{{5, 5}}},
		{line: "serial: 1- 5", serials: []SerialRange{{1, 5}}},
		{line: "serial: 18446744073709551615", serials: []SerialRange{{math.MaxUint64, math.MaxUint64}}},
		{line: "serial: 5-5", err: "invalid serial range 5:5"},
		{line: "serial: 9-3", err: "invalid serial range 9:3"},
		{line: "serial: 0", err: "serial 0 cannot be revoked"},
		{line: "serial: 0-5", err: "serial 0 cannot be revoked"},
		{line: "serial: -0", err: "serial 0 cannot be revoked"},
		{line: "serial: 08", err: `invalid serial "08"`},
		{line: "serial: 0x", err: `invalid serial "0x"`},
		{line: "serial: 0x-5", err: `invalid serial "0x-5"`},
		{line: "serial: 18446744073709551616", err: "serial out of range"},
		{line: "serial: 1-18446744073709551616", err: "serial out of range"},
		{line: "serial: -18446744073709551616", err: "serial out of range"},
		{line: "serial:", err: `invalid serial ""`},
		{line: "serial: 1-", err: `invalid serial ""`},
		{line: "serial: -", err: `invalid serial ""`},
		{line: "serial: abc", err: `invalid serial "abc"`},
		{line: "serial: 5 6", err: `invalid serial "5 6"`},
		{line: "serial: 5 - 6", err: `invalid serial "5 - 6"`},
		{line: "serial: 5\r", err: "invalid serial \"5\\r\""},
		{line: "serial: 5\x00junk", serials: []SerialRange{{5, 5}}},
		{line: "id: a\r", ids: []string{"a\r"}},
		{line: "id:", ids: []string{""}},
		{line: "id: a#b", ids: []string{"a"}},
		{line: "ID:   spaced id  ", ids: []string{"spaced id"}},
		{line: "# comment"},
		{line: "   "},
		{line: "\t# indented comment"},
		{line: "hash: SHA256:" + fp, check: hasSHA256},
		{line: "hash: SHA1:abc", err: "unsupported hash algorithm"},
		{line: "hash: sha256:" + fp, err: "unsupported hash algorithm"},
		{line: "hash: SHA256:abcd", err: "hash is 3 bytes, want 32"},
		{line: "hash: SHA256:!!!!", err: "decode hash failed"},
		{line: "key: " + authorizedKey(user) + " comment", check: hasKey(user)},
		{line: "KEY:" + authorizedKey(cert), check: hasKey(user)},
		{line: authorizedKey(user), check: hasKey(user)},
		{line: "sha1: " + authorizedKey(user), check: func(t *testing.T, k *KRL) {
			if !slices.Equal(k.SHA1, [][20]byte{sha1.Sum(user.Marshal())}) {
				t.Errorf("SHA1 %x", k.SHA1)
			}
		}},
		{line: "sha256: " + authorizedKey(cert), check: hasSHA256},
		{line: authorizedKey(cert) + " a comment", check: underOther([]SerialRange{{77, 77}}, nil)},
		{line: authorizedKey(cert0), check: underOther(nil, []string{"c0"})},
		{line: authorizedKey(forged), err: "invalid key: certificate signature"},
		{line: "garbage", err: "invalid key"},
		{line: "ssh-ed25519 !!!!", err: "invalid key"},
		{line: "ssh-rsa " + strings.Fields(authorizedKey(user))[1], err: "invalid key: type ssh-rsa does not match"},
	}
}

// TestSpec reads each spec line and checks what it revokes, or its error.
func TestSpec(t *testing.T) {
	ca := newSigner(t)
	for _, c := range specCases(t, ca) {
		k, err := ParseSpec(strings.NewReader(c.line+"\n"), ca.PublicKey())
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), "krl: spec:1: ") {
				t.Errorf("%q: error %v, want %q", c.line, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		s := k.CertsFor(ca.PublicKey())
		if got := slices.Collect(s.Serials.Ranges()); !slices.Equal(got, c.serials) || !slices.Equal(s.KeyIDs, c.ids) {
			t.Errorf("%q: serials %v IDs %q, want %v %q", c.line, got, s.KeyIDs, c.serials, c.ids)
		}
		if c.check != nil {
			t.Run(c.line[:min(len(c.line), 20)], func(t *testing.T) { c.check(t, k) })
		}
	}
}

func TestSpecNeedsCA(t *testing.T) {
	for _, line := range []string{"serial: 5", "id: x"} {
		if _, err := ParseSpec(strings.NewReader(line), nil); err == nil || !strings.Contains(err.Error(), "requires a CA key") {
			t.Errorf("%q without a CA: %v", line, err)
		}
	}
	k := new(KRL)
	if err := k.AddSpec(strings.NewReader("serial: 5\nid: x\n"), SpecOptions{Name: "w", AnyCA: true}); err != nil {
		t.Fatal(err)
	}
	if len(k.Certs) != 1 || k.Certs[0].CA != nil || !k.Certs[0].Serials.Contains(5) || k.Certs[0].KeyIDs[0] != "x" {
		t.Errorf("wildcard: %+v", k.Certs)
	}
	err := k.AddSpec(strings.NewReader("\n\nserial: 0\n"), SpecOptions{Name: "f.spec", AnyCA: true})
	if err == nil || err.Error() != "krl: f.spec:3: serial 0 cannot be revoked" {
		t.Errorf("error %v", err)
	}
}

// TestSpecLongAndUnterminated: lines longer than the read buffer, a last
// line without a newline.
func TestSpecLongAndUnterminated(t *testing.T) {
	ca := newSigner(t)
	long := "id: " + strings.Repeat("x", 200_000)
	k, err := ParseSpec(strings.NewReader(long+"\nserial: 9"), ca.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	s := k.CertsFor(ca.PublicKey())
	if len(s.KeyIDs) != 1 || len(s.KeyIDs[0]) != 200_000 || !s.Serials.Contains(9) {
		t.Errorf("IDs %d, serials %v", len(s.KeyIDs), s.Serials.r)
	}
}
