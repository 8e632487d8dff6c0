package krl

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// keygen runs the real ssh-keygen in a scratch directory.
type keygen struct {
	t    testing.TB
	path string
	dir  string
	n    int
}

func newKeygen(t testing.TB) *keygen {
	return &keygen{t: t, path: sshKeygen(t), dir: t.TempDir()}
}

// forTest is g for a subtest.
func (g *keygen) forTest(t testing.TB) *keygen {
	return &keygen{t: t, path: g.path, dir: t.TempDir()}
}

// file writes data to a new file in the scratch directory.
func (g *keygen) file(name string, data []byte) string {
	g.t.Helper()
	g.n++
	p := filepath.Join(g.dir, fmt.Sprintf("%d-%s", g.n, name))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		g.t.Fatal(err)
	}
	return p
}

func (g *keygen) run(args ...string) (stdout, stderr string, code int) {
	g.t.Helper()
	cmd := exec.Command(g.path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		g.t.Fatalf("ssh-keygen: %v", err)
	}
	return out.String(), errb.String(), code
}

// build runs ssh-keygen -k on spec with -s caFile (if not ""): the KRL
// it wrote, or its exit code and message.
func (g *keygen) build(spec, caFile string) ([]byte, int, string) {
	g.t.Helper()
	out := filepath.Join(g.dir, fmt.Sprintf("%d.krl", g.n))
	args := []string{"-q", "-k", "-f", out}
	if caFile != "" {
		args = append(args, "-s", caFile)
	}
	_, stderr, code := g.run(append(args, g.file("spec", []byte(spec)))...)
	if code != 0 {
		return nil, code, stderr
	}
	b, err := os.ReadFile(out)
	if err != nil {
		g.t.Fatal(err)
	}
	return b, 0, ""
}

// query runs ssh-keygen -Q -f krl on probe files: each probe's verdict,
// and the exit code. With exit code 255 (the KRL did not load) there are
// no verdicts.
func (g *keygen) query(krl []byte, probes []string) ([]bool, int, string) {
	g.t.Helper()
	stdout, stderr, code := g.run(append([]string{"-Q", "-f", g.file("krl", krl)}, probes...)...)
	if code == 255 {
		return nil, code, stderr
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(probes) {
		g.t.Fatalf("ssh-keygen -Q: %d lines for %d probes (exit %d): %s", len(lines), len(probes), code, stderr)
	}
	verdicts := make([]bool, len(probes))
	for i, l := range lines {
		// "FILE (COMMENT): VERDICT"; the comment is the file name if the
		// key has none.
		i0 := strings.LastIndex(l, ": ")
		verdict := l[i0+2:]
		if i0 < 0 || !strings.HasPrefix(l, probes[i]) || verdict != "ok" && verdict != "REVOKED" {
			g.t.Fatalf("ssh-keygen -Q line %q for %s", l, probes[i])
		}
		verdicts[i] = verdict == "REVOKED"
	}
	return verdicts, code, stderr
}

// probe writes key as a public key file.
func (g *keygen) probe(key ssh.PublicKey) string {
	return g.file("probe.pub", ssh.MarshalAuthorizedKey(key))
}

// TestOracleMalformed: ssh-keygen -Q refuses every KRL Parse refuses
// (except the few Parse is stricter about), and loads the edge cases
// Parse loads, including a bitmap of exactly 16384 bits.
func TestOracleMalformed(t *testing.T) {
	g := newKeygen(t)
	probe := g.probe(newSigner(t).PublicKey())
	for _, c := range malformed(t) {
		_, code, stderr := g.query(c.b, []string{probe})
		if loads := code != 255; loads != stricterThanSSHD[c.name] {
			t.Errorf("%s: ssh-keygen -Q exit %d (%s)", c.name, code, strings.TrimSpace(stderr))
		}
	}
	for _, c := range edgeValid(t) {
		if _, code, stderr := g.query(c.b, []string{probe}); code == 255 {
			t.Errorf("%s: Parse loads it, ssh-keygen -Q does not: %s", c.name, stderr)
		}
	}
}

// TestOracleSpec: ssh-keygen -k accepts exactly the spec lines AddSpec
// accepts, and its KRL decodes to the same revocations.
func TestOracleSpec(t *testing.T) {
	g := newKeygen(t)
	ca := newSigner(t)
	caFile := g.file("ca.pub", ssh.MarshalAuthorizedKey(ca.PublicKey()))
	for _, c := range specCases(t, ca) {
		theirs, code, stderr := g.build(c.line+"\n", caFile)
		ours, err := ParseSpec(strings.NewReader(c.line+"\n"), ca.PublicKey())
		if (code == 0) != (err == nil) {
			t.Errorf("%q: ssh-keygen exit %d (%s), AddSpec error %v", c.line, code, strings.TrimSpace(stderr), err)
			continue
		}
		if err != nil {
			continue
		}
		k, err := Parse(theirs)
		if err != nil {
			t.Errorf("%q: ssh-keygen's KRL: %v", c.line, err)
			continue
		}
		k.Generated = time.Time{}
		if d := sameMeaning(k, ours); d != "" {
			t.Errorf("%q: ssh-keygen's KRL differs: %s", c.line, d)
		}
	}
	// serial: and id: need -s, even with a CA of their own elsewhere.
	for _, line := range []string{"serial: 5", "id: x"} {
		if _, code, _ := g.build(line+"\n", ""); code == 0 {
			t.Errorf("%q: ssh-keygen without -s accepted it", line)
		}
	}
}

// serialCase is a revocation set for the query oracle.
type serialCase struct {
	name     string
	runs     []SerialRange
	ids      []string
	wildcard bool // serial: and id: lines for any CA (-s none)
}

func serialCases(rng *mrand.Rand) []serialCase {
	var sparse, dense []SerialRange
	for range 300 {
		s := 1 + rng.Uint64N(math.MaxUint64-1)
		sparse = append(sparse, SerialRange{s, s})
	}
	sparse = append(sparse, SerialRange{math.MaxUint64, math.MaxUint64}, SerialRange{1, 1})
	for s := uint64(1); s <= 11000; s++ {
		if rng.IntN(11) != 0 {
			dense = append(dense, SerialRange{s, s})
		}
	}
	// One bitmap as ssh-keygen writes it: exactly 16384 bits, and 16385.
	edge := func(width uint64) []SerialRange {
		var rs []SerialRange
		for s := uint64(1000); s < 1000+width-1; s += 2 {
			rs = append(rs, SerialRange{s, s})
		}
		return append(rs, SerialRange{1000 + width - 1, 1000 + width - 1})
	}
	return []serialCase{
		{name: "sparse", runs: sparse},
		{name: "dense", runs: dense},
		{name: "contiguous", runs: []SerialRange{{1, 100_000}}},
		{name: "mixed", runs: randomRuns(rng, 500, 1), ids: []string{"laptop-1", "web-2", ""}},
		{name: "near 2^64", runs: randomRuns(rng, 300, math.MaxUint64-3_000_000)},
		{name: "bitmap 16384", runs: edge(16384)},
		{name: "bitmap 16385", runs: edge(16385)},
		{name: "wildcard", runs: randomRuns(rng, 100, 50), ids: []string{"stolen", "lost"}, wildcard: true},
	}
}

// TestOracleQuery: for random revocation sets, ssh-keygen -Q loads the
// KRL devid writes and agrees with IsRevoked on every probe certificate;
// ssh-keygen -k's KRL for the same spec, where it loads, decodes to the
// same revocations and is no smaller; where it does not load, Parse
// refuses it too.
func TestOracleQuery(t *testing.T) {
	g := newKeygen(t)
	ca, otherCA := newSigner(t), newSigner(t)
	caFile := g.file("ca.pub", ssh.MarshalAuthorizedKey(ca.PublicKey()))
	user := newSigner(t).PublicKey()
	for i, c := range serialCases(mrand.New(mrand.NewPCG(5, 6))) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g := g.forTest(t)
			rng := mrand.New(mrand.NewPCG(7, uint64(i)))
			var spec strings.Builder
			for _, r := range c.runs {
				if r.First == r.Last {
					fmt.Fprintf(&spec, "serial: %d\n", r.First)
				} else {
					fmt.Fprintf(&spec, "serial: %d-%d\n", r.First, r.Last)
				}
			}
			for _, id := range c.ids {
				fmt.Fprintf(&spec, "id: %s\n", id)
			}
			signer, opts, sFlag := ca, SpecOptions{Name: c.name, CA: ca.PublicKey()}, caFile
			if c.wildcard {
				opts, sFlag = SpecOptions{Name: c.name, AnyCA: true}, "none"
			}
			k := new(KRL)
			if err := k.AddSpec(strings.NewReader(spec.String()), opts); err != nil {
				t.Fatal(err)
			}
			ours, parsed := roundTrip(t, k)

			var truth SerialSet
			if err := truth.AddAll(c.runs); err != nil {
				t.Fatal(err)
			}
			var probes []string
			var want []bool
			var keys []ssh.PublicKey
			add := func(s ssh.Signer, serial uint64, id string) {
				key := newCert(t, s, user, serial, id)
				keys = append(keys, key)
				probes = append(probes, g.probe(key))
				w := slices.Contains(c.ids, id) && (s == signer || c.wildcard)
				w = w || serial != 0 && truth.Contains(serial) && (s == signer || c.wildcard)
				want = append(want, w)
			}
			serials := []uint64{0, 1, 2, math.MaxUint64}
			for i, r := range c.runs {
				if len(c.runs) > 80 && rng.IntN(len(c.runs)) > 80 && i > 0 {
					continue
				}
				serials = append(serials, r.First-1, r.First, r.Last, r.Last+1, r.First+(r.Last-r.First)/2)
			}
			for range 50 {
				serials = append(serials, rng.Uint64())
			}
			slices.Sort(serials)
			for _, s := range slices.Compact(serials) {
				add(signer, s, "dev")
			}
			for _, id := range append(slices.Clone(c.ids), "other", "Laptop-1") {
				add(signer, 0, id)
				add(otherCA, 1+rng.Uint64N(20), id)
			}
			for i, key := range keys {
				if got := parsed.IsRevoked(key); got != want[i] {
					t.Errorf("IsRevoked(serial %d, ID %q) = %v, want %v", key.(*ssh.Certificate).Serial, key.(*ssh.Certificate).KeyId, got, want[i])
				}
			}
			verdicts, code, stderr := g.query(ours, probes)
			if code == 255 {
				t.Fatalf("ssh-keygen -Q cannot load devid's KRL: %s", stderr)
			}
			for i := range probes {
				if verdicts[i] != want[i] {
					c := keys[i].(*ssh.Certificate)
					t.Errorf("ssh-keygen -Q: serial %d ID %q revoked %v, want %v", c.Serial, c.KeyId, verdicts[i], want[i])
				}
			}

			theirs, code, stderr := g.build(spec.String(), sFlag)
			if code != 0 {
				t.Fatalf("ssh-keygen -k: exit %d: %s", code, stderr)
			}
			_, qcode, _ := g.query(theirs, probes[:1])
			tk, perr := Parse(theirs)
			if (qcode != 255) != (perr == nil) {
				t.Fatalf("ssh-keygen's KRL: ssh-keygen -Q exit %d, Parse error %v", qcode, perr)
			}
			t.Logf("%d serials in %d runs: devid %d bytes, ssh-keygen %d bytes (loads: %v)", truth.Count(), truth.Len(), len(ours), len(theirs), perr == nil)
			if perr != nil {
				if !strings.Contains(perr.Error(), "bitmap") {
					t.Errorf("ssh-keygen's KRL refused for another reason than a bitmap: %v", perr)
				}
				return
			}
			tk.Generated = time.Time{}
			if d := sameMeaning(tk, parsed); d != "" {
				t.Errorf("ssh-keygen's KRL decodes differently: %s", d)
			}
			if len(ours) > len(theirs) {
				t.Errorf("devid's KRL is %d bytes, ssh-keygen's %d", len(ours), len(theirs))
			}
		})
	}
}

// TestOracleKeys: explicit keys, SHA1 and SHA256 fingerprints, hash:
// lines, a revoked CA key, and a certificate line for another CA.
func TestOracleKeys(t *testing.T) {
	g := newKeygen(t)
	ca, ca2, ca3 := newSigner(t), newSigner(t), newSigner(t)
	caFile := g.file("ca.pub", ssh.MarshalAuthorizedKey(ca.PublicKey()))
	var users []ssh.PublicKey
	for range 6 {
		users = append(users, newSigner(t).PublicKey())
	}
	sum := sha256.Sum256(users[3].Marshal())
	spec := strings.Join([]string{
		"key: " + authorizedKey(users[0]),
		"sha1: " + authorizedKey(users[1]),
		"sha256: " + authorizedKey(users[2]),
		"hash: SHA256:" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "="),
		"sha256: " + authorizedKey(ca2.PublicKey()),
		authorizedKey(newCert(t, ca3, users[5], 42, "x")),
		authorizedKey(newCert(t, ca3, users[5], 0, "zero")),
	}, "\n")
	k, err := ParseSpec(strings.NewReader(spec), ca.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := roundTrip(t, k)
	theirs, code, stderr := g.build(spec, caFile)
	if code != 0 {
		t.Fatalf("ssh-keygen -k: %s", stderr)
	}
	tk, err := Parse(theirs)
	if err != nil {
		t.Fatal(err)
	}
	tk.Generated = time.Time{}
	if d := sameMeaning(tk, k); d != "" {
		t.Errorf("ssh-keygen's KRL decodes differently: %s", d)
	}
	var probes []string
	var keys []ssh.PublicKey
	for i, u := range users {
		keys = append(keys, u)
		for _, s := range []ssh.Signer{ca, ca2, ca3} {
			keys = append(keys, newCert(t, s, u, uint64(40+i), "x"+fmt.Sprint(i)), newCert(t, s, u, 0, "zero"))
		}
	}
	for _, key := range keys {
		probes = append(probes, g.probe(key))
	}
	for _, krl := range [][]byte{ours, theirs} {
		verdicts, code, stderr := g.query(krl, probes)
		if code == 255 {
			t.Fatal(stderr)
		}
		for i, key := range keys {
			if verdicts[i] != k.IsRevoked(key) {
				t.Errorf("probe %d (%s): ssh-keygen -Q %v, IsRevoked %v", i, key.Type(), verdicts[i], k.IsRevoked(key))
			}
		}
		if code != 1 {
			t.Errorf("ssh-keygen -Q with revoked probes: exit %d, want 1", code)
		}
	}
	if _, code, _ := g.query(ours, probes[4*7:4*7+1]); code != 0 {
		t.Errorf("ssh-keygen -Q with no revoked probe: exit %d, want 0", code)
	}
}
