package krl

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/crypto/ssh"
)

// benchSerials returns n sorted serials: contiguous (1..n), sparse (random
// below 2^63) or dense (random n of 1..1.1n).
func benchSerials(shape string, n int) []uint64 {
	rng := mrand.New(mrand.NewPCG(uint64(n), 42))
	var s []uint64
	switch shape {
	case "contiguous":
		for i := 1; i <= n; i++ {
			s = append(s, uint64(i))
		}
	case "sparse":
		for len(s) < n {
			s = append(s, 1+rng.Uint64N(1<<63))
		}
	case "dense":
		all := make([]uint64, n+n/10)
		for i := range all {
			all[i] = uint64(i + 1)
		}
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		s = all[:n]
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// benchSpec is a spec with one "serial:" line per serial, as a CA that
// revokes certificate by certificate would write.
func benchSpec(serials []uint64) []byte {
	b := make([]byte, 0, len(serials)*20)
	for _, s := range serials {
		b = append(b, "serial: "...)
		b = strconv.AppendUint(b, s, 10)
		b = append(b, '\n')
	}
	return b
}

var benchShapes = []string{"contiguous", "sparse", "dense"}

// BenchmarkBuild compares devid (AddSpec + Marshal) with ssh-keygen -k on
// the same spec: time, KRL size in bytes, and whether OpenSSH loads it.
func BenchmarkBuild(b *testing.B) {
	ca := newSigner(b)
	dir := b.TempDir()
	caFile := filepath.Join(dir, "ca.pub")
	if err := os.WriteFile(caFile, ssh.MarshalAuthorizedKey(ca.PublicKey()), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, shape := range benchShapes {
		for _, n := range []int{1e3, 1e5, 1e6} {
			spec := benchSpec(benchSerials(shape, n))
			specFile := filepath.Join(dir, fmt.Sprintf("%s-%d.spec", shape, n))
			if err := os.WriteFile(specFile, spec, 0o600); err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("%s/n=%.0e", shape, float64(n))
			b.Run(name+"/devid", func(b *testing.B) {
				var out []byte
				for b.Loop() {
					k := new(KRL)
					if err := k.AddSpec(bytes.NewReader(spec), SpecOptions{Name: "bench", CA: ca.PublicKey()}); err != nil {
						b.Fatal(err)
					}
					var err error
					if out, err = k.Marshal(); err != nil {
						b.Fatal(err)
					}
				}
				reportKRL(b, out)
			})
			b.Run(name+"/ssh-keygen", func(b *testing.B) {
				keygen := sshKeygen(b)
				krlFile := filepath.Join(dir, "keygen.krl")
				for b.Loop() {
					if out, err := exec.Command(keygen, "-q", "-k", "-f", krlFile, "-s", caFile, specFile).CombinedOutput(); err != nil {
						b.Fatalf("ssh-keygen -k: %v: %s", err, out)
					}
				}
				out, err := os.ReadFile(krlFile)
				if err != nil {
					b.Fatal(err)
				}
				reportKRL(b, out)
			})
		}
	}
}

// reportKRL reports a KRL's size and whether OpenSSH loads it (Parse
// refuses exactly what OpenSSH 9.2 does not load; TestOracleQuery checks
// that for ssh-keygen's output).
func reportKRL(b *testing.B, krl []byte) {
	b.ReportMetric(float64(len(krl)), "bytes")
	loads := 1.0
	if _, err := Parse(krl); err != nil {
		loads = 0
	}
	b.ReportMetric(loads, "loads")
}

// BenchmarkQuery is IsRevoked for a certificate against a parsed KRL of
// 10^6 serials.
func BenchmarkQuery(b *testing.B) {
	ca := newSigner(b)
	user := newSigner(b).PublicKey()
	var probes []ssh.PublicKey
	rng := mrand.New(mrand.NewPCG(1, 1))
	for range 64 {
		probes = append(probes, newCert(b, ca, user, rng.Uint64N(1_200_000), "dev"))
	}
	for _, shape := range benchShapes {
		k, err := Parse(benchKRL(b, ca, shape))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(shape, func(b *testing.B) {
			i := 0
			for b.Loop() {
				k.IsRevoked(probes[i%len(probes)])
				i++
			}
		})
	}
}

// BenchmarkLoad is what a KRL check costs from the file: devid's Parse
// plus IsRevoked, against ssh-keygen -Q on one certificate (a process
// start, sshd's loader and its check), for 10^6 serials written by devid.
func BenchmarkLoad(b *testing.B) {
	ca := newSigner(b)
	cert := newCert(b, ca, newSigner(b).PublicKey(), 12345, "dev")
	dir := b.TempDir()
	certFile := filepath.Join(dir, "cert.pub")
	if err := os.WriteFile(certFile, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, shape := range benchShapes {
		raw := benchKRL(b, ca, shape)
		krlFile := filepath.Join(dir, shape+".krl")
		if err := os.WriteFile(krlFile, raw, 0o600); err != nil {
			b.Fatal(err)
		}
		b.Run(shape+"/devid", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				k, err := Parse(raw)
				if err != nil {
					b.Fatal(err)
				}
				k.IsRevoked(cert)
			}
		})
		b.Run(shape+"/ssh-keygen", func(b *testing.B) {
			keygen := sshKeygen(b)
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				out, err := exec.Command(keygen, "-Q", "-f", krlFile, certFile).CombinedOutput()
				if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
					b.Fatalf("ssh-keygen -Q: %v: %s", err, out)
				}
			}
		})
	}
}

// benchKRL is a KRL revoking 10^6 serials of a shape under ca.
func benchKRL(b *testing.B, ca ssh.Signer, shape string) []byte {
	serials := benchSerials(shape, 1e6)
	rs := make([]SerialRange, len(serials))
	for i, s := range serials {
		rs[i] = SerialRange{s, s}
	}
	k := &KRL{}
	if err := k.CertsFor(ca.PublicKey()).Serials.AddAll(rs); err != nil {
		b.Fatal(err)
	}
	raw, err := k.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return raw
}
