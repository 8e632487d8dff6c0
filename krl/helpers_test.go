package krl

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sshKeygen returns the path of ssh-keygen, skipping the test if there is
// none, but failing it when CI=true.
func sshKeygen(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ssh-keygen not found, and CI=true: %v", err)
		}
		t.Skip("ssh-keygen not found")
	}
	return p
}

// newSigner returns a fresh ed25519 key.
func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newCert returns a user certificate for key signed by ca.
func newCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, serial uint64, keyID string) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key: key, Serial: serial, KeyId: keyID, CertType: ssh.UserCert,
		ValidPrincipals: []string{"u"}, ValidBefore: ssh.CertTimeInfinity,
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// meaning is what a KRL revokes, comparable with ==-free reflection: per
// CA (wildcard ""), the serial ranges and key IDs; and the key sets.
type meaning struct {
	version, flags uint64
	generated      int64
	comment        string
	serials        map[string][]SerialRange
	ids            map[string][]string
	keys, sha1     []string
	sha256         []string
}

func meaningOf(k *KRL) meaning {
	m := meaning{version: k.Version, flags: k.Flags, comment: k.Comment,
		serials: map[string][]SerialRange{}, ids: map[string][]string{}}
	if !k.Generated.IsZero() {
		m.generated = k.Generated.Unix()
	}
	sets := map[string]*SerialSet{}
	for _, s := range k.Certs {
		ca := string(caBlob(s.CA))
		if sets[ca] == nil {
			sets[ca] = new(SerialSet)
		}
		if err := sets[ca].AddAll(slices.Collect(s.Serials.Ranges())); err != nil {
			panic(err)
		}
		m.ids[ca] = append(m.ids[ca], s.KeyIDs...)
	}
	for ca, s := range sets {
		if s.Len() > 0 {
			m.serials[ca] = slices.Collect(s.Ranges())
		}
	}
	for ca, ids := range m.ids {
		slices.Sort(ids)
		if m.ids[ca] = slices.Compact(ids); len(ids) == 0 {
			delete(m.ids, ca)
		}
	}
	uniq := func(bs []string) []string { slices.Sort(bs); return slices.Compact(bs) }
	for _, key := range k.RevokedKeys {
		m.keys = append(m.keys, string(key.Marshal()))
	}
	for _, h := range k.SHA1 {
		m.sha1 = append(m.sha1, string(h[:]))
	}
	for _, h := range k.SHA256 {
		m.sha256 = append(m.sha256, string(h[:]))
	}
	m.keys, m.sha1, m.sha256 = uniq(m.keys), uniq(m.sha1), uniq(m.sha256)
	return m
}

// sameMeaning returns what differs between two KRLs' revocations (and
// header), or "".
func sameMeaning(a, b *KRL) string {
	ma, mb := meaningOf(a), meaningOf(b)
	var diffs []string
	if ma.version != mb.version || ma.flags != mb.flags || ma.generated != mb.generated || ma.comment != mb.comment {
		diffs = append(diffs, fmt.Sprintf("header %d/%d/%d/%q vs %d/%d/%d/%q", ma.version, ma.flags, ma.generated, ma.comment, mb.version, mb.flags, mb.generated, mb.comment))
	}
	if !maps.EqualFunc(ma.serials, mb.serials, slices.Equal) {
		diffs = append(diffs, fmt.Sprintf("serials %v vs %v", shortRanges(ma.serials), shortRanges(mb.serials)))
	}
	if !maps.EqualFunc(ma.ids, mb.ids, slices.Equal) {
		diffs = append(diffs, fmt.Sprintf("key IDs %q vs %q", ma.ids, mb.ids))
	}
	if !slices.Equal(ma.keys, mb.keys) || !slices.Equal(ma.sha1, mb.sha1) || !slices.Equal(ma.sha256, mb.sha256) {
		diffs = append(diffs, fmt.Sprintf("keys/sha1/sha256 %d/%d/%d vs %d/%d/%d", len(ma.keys), len(ma.sha1), len(ma.sha256), len(mb.keys), len(mb.sha1), len(mb.sha256)))
	}
	return strings.Join(diffs, "; ")
}

func shortRanges(m map[string][]SerialRange) string {
	var b strings.Builder
	for ca, rs := range m {
		fmt.Fprintf(&b, "[CA %d bytes: %d ranges", len(ca), len(rs))
		for i, r := range rs {
			if i == 6 {
				b.WriteString(" ...")
				break
			}
			fmt.Fprintf(&b, " %v", r)
		}
		b.WriteString("]")
	}
	return b.String()
}

// roundTrip marshals k and parses it back, failing t unless that gives the
// same revocations and marshals to the same bytes again; it returns the
// bytes and the parsed KRL.
func roundTrip(t testing.TB, k *KRL) ([]byte, *KRL) {
	t.Helper()
	b, err := k.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	k2, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal(k)): %v", err)
	}
	if d := sameMeaning(k, k2); d != "" {
		t.Fatalf("Parse(Marshal(k)) differs: %s", d)
	}
	if b2, err := k2.Marshal(); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("Marshal(Parse(Marshal(k))) != Marshal(k) (%v)", err)
	}
	return b, k2
}

// Wire-format builders for hand-made KRLs.

func str(parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func u64(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

// sect is a section or subsection: a type byte and a string.
func sect(typ byte, body ...[]byte) []byte { return append([]byte{typ}, str(body...)...) }

// file is a KRL with an empty header and the given sections.
func file(sections ...[]byte) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, u64(0, 0, 0)...)
	b = append(b, str()...)
	b = append(b, str()...)
	return append(b, bytes.Join(sections, nil)...)
}

// certs is a certificates section for ca (nil blob: wildcard).
func certs(ca []byte, subs ...[]byte) []byte {
	return sect(sectionCerts, append([][]byte{str(ca), str()}, subs...)...)
}

// bitmap is a 0x22 subsection with the given set bit indices, as a
// minimal mpint.
func bitmap(offset uint64, bitIdx ...int) []byte {
	top := slices.Max(bitIdx)
	n := top/8 + 1
	buf := make([]byte, n)
	for _, i := range bitIdx {
		buf[n-1-i/8] |= 1 << (i % 8)
	}
	if buf[0]&0x80 != 0 {
		buf = append([]byte{0}, buf...)
	}
	return sect(subBitmap, u64(offset), str(buf))
}

// subsections walks a Marshal'd KRL and returns its serial subsections'
// types and, for bitmaps, their widths in bits.
func subsections(t testing.TB, b []byte) (types []byte, widths []int) {
	t.Helper()
	rd := func(n int) []byte {
		if len(b) < n {
			t.Fatalf("walk: truncated")
		}
		x := b[:n]
		b = b[n:]
		return x
	}
	rdStr := func() []byte { return rd(int(binary.BigEndian.Uint32(rd(4)))) }
	rd(len(magic) + 4 + 24)
	rdStr()
	rdStr()
	for len(b) > 0 {
		typ := rd(1)[0]
		body := rdStr()
		if typ != sectionCerts {
			continue
		}
		outer := b
		b = body
		rdStr()
		rdStr()
		for len(b) > 0 {
			st := rd(1)[0]
			sub := rdStr()
			types = append(types, st)
			if st == subBitmap {
				mp := sub[8+4:]
				for len(mp) > 0 && mp[0] == 0 {
					mp = mp[1:]
				}
				w := 0
				if len(mp) > 0 {
					w = len(mp)*8 - leadingZeros(mp[0])
				}
				widths = append(widths, w)
			}
		}
		b = outer
	}
	return types, widths
}

func leadingZeros(x byte) int {
	n := 0
	for i := 7; i >= 0 && x&(1<<i) == 0; i-- {
		n++
	}
	return n
}
