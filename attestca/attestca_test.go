package attestca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"

	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/google/go-attestation/attest"
	"github.com/smallstep/nosql"
)

type fixture struct {
	ca   *attestca.CA
	inv  *inventory.Store
	clk  *fakeclock.Clock
	db   nosql.DB
	conf attestca.Config
}

func newFixture(t testing.TB, ekRoots *x509.CertPool, ekInter *x509.CertPool) *fixture {
	return newFixtureLifetime(t, ekRoots, ekInter, 0)
}

// newFixtureLifetime is newFixture with AK certificates of the given
// lifetime (0: the default); the Attestation CA's own certificate lasts ten
// years.
func newFixtureLifetime(t testing.TB, ekRoots *x509.CertPool, ekInter *x509.CertPool, akLifetime time.Duration) *fixture {
	t.Helper()
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := fakeclock.New(time.Now())
	inv, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test Attestation CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	conf := attestca.Config{Cert: cert, Signer: key, EKRoots: ekRoots, EKIntermediates: ekInter, Now: clk.Now, AKCertLifetime: akLifetime,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ca, err := attestca.New(conf, inv, db)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, inv: inv, clk: clk, db: db, conf: conf}
}

// device is a swtpm with an AK, and the request it would send.
type device struct {
	sw  *swtpmtest.Instance
	ek  *tpm.EK
	ak  *tpm.AK
	req *attestca.AttestRequest
}

func newDevice(t testing.TB) *device {
	t.Helper()
	return newDeviceWith(t, swtpmtest.Options{})
}

// newDeviceWith is newDevice for a TPM made as opts says; its request
// carries the EK that names the device.
func newDeviceWith(t testing.TB, opts swtpmtest.Options) *device {
	t.Helper()
	sw := opts.New(t)
	ek, err := sw.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := sw.TPM.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	info, err := sw.TPM.Info()
	if err != nil {
		t.Fatal(err)
	}
	p := ak.AttestationParameters()
	ekDER, _ := x509.MarshalPKIXPublicKey(ek.Public)
	req := &attestca.AttestRequest{
		TPMInfo: attestca.TPMInfo{Version: 2, Manufacturer: strconv.FormatUint(uint64(info.Manufacturer), 10), Model: info.Model, FirmwareVersion: info.FirmwareVersion()},
		EKPub:   ekDER, EKCerts: [][]byte{ek.Certificate.Raw},
		AttestParams: attestca.AttestationParameters{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature},
	}
	return &device{sw: sw, ek: ek, ak: ak, req: req}
}

func (d *device) register(t *testing.T, f *fixture, name string) {
	t.Helper()
	if _, err := f.inv.AddDevice("test", inventory.NewDevice{EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.ek.Certificate.Raw})), Name: name, Kind: "host"}); err != nil {
		t.Fatal(err)
	}
}

// activate runs TPM2_ActivateCredential on the CA's challenge.
func (d *device) activate(t *testing.T, r *attestca.AttestResponse) []byte {
	t.Helper()
	secret, err := d.ak.ActivateCredential(d.ek, attest.EncryptedCredential{Credential: r.Credential, Secret: r.Secret})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func wantRefusal(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	var e *attestca.Error
	if !errors.As(err, &e) || !errors.Is(err, kind) || !strings.Contains(e.Msg, msg) {
		t.Fatalf("err = %v, want %v with %q", err, kind, msg)
	}
}

func TestAttestation(t *testing.T) {
	f := newFixture(t, nil, nil)
	a, b := newDevice(t), newDevice(t)

	// Unregistered EK.
	_, err := f.ca.Attest(a.req)
	wantRefusal(t, err, attestca.ErrRefused, "is not registered")

	a.register(t, f, "a")
	b.register(t, f, "b")
	ra, err := f.ca.Attest(a.req)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := f.ca.Attest(b.req)
	if err != nil {
		t.Fatal(err)
	}
	secretA, secretB := a.activate(t, ra), b.activate(t, rb)

	// Wrong secret.
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: []byte("0123456789abcdef0123456789abcdef")})
	wantRefusal(t, err, attestca.ErrRefused, "wrong secret")
	// A's secret to finish B's attestation: refused, and not used up.
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secretA, DeviceID: b.ek.DeviceID})
	wantRefusal(t, err, attestca.ErrRefused, "belongs to another device")

	resp, err := f.ca.Secret(&attestca.SecretRequest{Secret: secretA, DeviceID: a.ek.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	akCert, err := x509.ParseCertificate(resp.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !akCert.PublicKey.(*rsa.PublicKey).Equal(a.ak.Public()) || akCert.URIs[0].String() != a.ek.DeviceID {
		t.Fatalf("AK certificate is not A's AK or device: %v", akCert.URIs)
	}
	// Replay.
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secretA})
	wantRefusal(t, err, attestca.ErrRefused, "already used")

	// B is quarantined between /attest and /secret.
	if _, err := f.inv.SetStatus("test", b.ek.DeviceID, inventory.StatusQuarantined, ""); err != nil {
		t.Fatal(err)
	}
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secretB})
	wantRefusal(t, err, attestca.ErrRefused, "is quarantined")
	_, err = f.ca.Attest(b.req)
	wantRefusal(t, err, attestca.ErrRefused, "is quarantined")
	if _, err := f.inv.SetStatus("test", b.ek.DeviceID, inventory.StatusRetired, ""); err != nil {
		t.Fatal(err)
	}
	_, err = f.ca.Attest(b.req)
	wantRefusal(t, err, attestca.ErrRefused, "is retired")

	// Expired: the secret waits 60 s at most.
	ra, err = f.ca.Attest(a.req)
	if err != nil {
		t.Fatal(err)
	}
	secretA = a.activate(t, ra)
	f.clk.Advance(61 * time.Second)
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secretA})
	wantRefusal(t, err, attestca.ErrRefused, "expired")
}

func TestAttestRequestChecks(t *testing.T) {
	f := newFixture(t, nil, nil)
	a, b := newDevice(t), newDevice(t)
	a.register(t, f, "a")

	// An EK certificate that is not the EK's.
	r := *a.req
	r.EKCerts = b.req.EKCerts
	_, err := f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrInvalid, "not for the EK sent")

	// A's EK with B's AK: credential activation cannot work, but the
	// parameters themselves are those of a real TPM key, so the CA answers;
	// B's TPM cannot activate a credential made for A's EK.
	r = *a.req
	r.AttestParams = b.req.AttestParams
	resp, err := f.ca.Attest(&r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ak.ActivateCredential(b.ek, attest.EncryptedCredential{Credential: resp.Credential, Secret: resp.Secret}); err == nil {
		t.Fatal("a TPM activated a credential made for another TPM's EK")
	}

	// Tampered AK creation data.
	r = *a.req
	r.AttestParams.CreateSignature = append([]byte{}, a.req.AttestParams.CreateSignature...)
	r.AttestParams.CreateSignature[len(r.AttestParams.CreateSignature)-1] ^= 1
	_, err = f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrInvalid, "AK parameters")

	r = *a.req
	r.TPMInfo.Version = 1
	_, err = f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrInvalid, "only TPM 2.0")
}

func TestEKRoots(t *testing.T) {
	a, b := newDevice(t), newDevice(t)
	// Roots of b's manufacturer only: a's EK certificate does not chain.
	f := newFixture(t, b.sw.EKRoots(), b.sw.EKIntermediates())
	a.register(t, f, "a")
	b.register(t, f, "b")
	_, err := f.ca.Attest(a.req)
	wantRefusal(t, err, attestca.ErrRefused, "does not chain to a configured manufacturer root")
	if _, err := f.ca.Attest(b.req); err != nil {
		t.Fatal(err)
	}
	r := *b.req
	r.EKCerts = nil
	_, err = f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrRefused, "EK certificate is required")
}

// BenchmarkAttestation measures the CA's side of an attestation: /attest
// (AK checks, credential generation, storing the pending attestation) and
// /secret (using it up, the status check, the AK certificate). The TPM's
// credential activation is not timed.
func BenchmarkAttestation(b *testing.B) {
	f := newFixture(b, nil, nil)
	d := newDevice(b)
	if _, err := f.inv.AddDevice("bench", inventory.NewDevice{EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.ek.Certificate.Raw})), Name: "bench", Kind: "host"}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := f.ca.Attest(d.req)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		secret, err := d.ak.ActivateCredential(d.ek, attest.EncryptedCredential{Credential: r.Credential, Secret: r.Secret})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := f.ca.Secret(&attestca.SecretRequest{Secret: secret}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attestations/s")
}

// TestSecretOnAnotherInstance: the pending attestation lives in the store,
// so another CA instance over the same store (a restart, another replica)
// finishes it, once.
func TestSecretOnAnotherInstance(t *testing.T) {
	f := newFixture(t, nil, nil)
	a := newDevice(t)
	a.register(t, f, "a")
	r, err := f.ca.Attest(a.req)
	if err != nil {
		t.Fatal(err)
	}
	secret := a.activate(t, r)
	other, err := attestca.New(f.conf, f.inv, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Secret(&attestca.SecretRequest{Secret: secret}); err != nil {
		t.Fatalf("another instance: %v", err)
	}
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secret})
	wantRefusal(t, err, attestca.ErrRefused, "already used")
}

// TestAttestTrailingBytes: an AK public area or creation signature with
// bytes after the TPM structure is refused; the parsers underneath ignore
// them.
func TestAttestTrailingBytes(t *testing.T) {
	f := newFixture(t, nil, nil)
	a := newDevice(t)
	a.register(t, f, "a")
	for _, extra := range [][]byte{{0}, {0xff}, []byte("trailing data")} {
		r := *a.req
		r.AttestParams.Public = append(append([]byte{}, a.req.AttestParams.Public...), extra...)
		_, err := f.ca.Attest(&r)
		wantRefusal(t, err, attestca.ErrInvalid, "AK public area: "+strconv.Itoa(len(extra))+" bytes after the TPMT_PUBLIC")

		r = *a.req
		r.AttestParams.CreateSignature = append(append([]byte{}, a.req.AttestParams.CreateSignature...), extra...)
		_, err = f.ca.Attest(&r)
		wantRefusal(t, err, attestca.ErrInvalid, "AK creation signature: "+strconv.Itoa(len(extra))+" bytes after the TPMT_SIGNATURE")
	}
	// Untouched, it passes.
	if _, err := f.ca.Attest(a.req); err != nil {
		t.Fatal(err)
	}
}

// TestAKCertLifetime: AK certificates last a year by default (they only
// vouch that a key is in a TPM, and step's tooling keeps reusing one), or
// as configured, but never beyond the Attestation CA's own certificate.
func TestAKCertLifetime(t *testing.T) {
	a := newDevice(t)
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		want     time.Duration
	}{
		{"default", 0, 365 * 24 * time.Hour},
		{"configured", 90 * 24 * time.Hour, 90 * 24 * time.Hour},
		{"capped", 20 * 365 * 24 * time.Hour, 0}, // 0: the CA certificate's end
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureLifetime(t, nil, nil, tc.lifetime)
			a.register(t, f, "a")
			r, err := f.ca.Attest(a.req)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := f.ca.Secret(&attestca.SecretRequest{Secret: a.activate(t, r)})
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(resp.Chain[0])
			if err != nil {
				t.Fatal(err)
			}
			want := f.clk.Now().Add(tc.want)
			if tc.want == 0 {
				want = f.conf.Cert.NotAfter
			}
			if !c.NotAfter.Equal(want.Truncate(time.Second)) {
				t.Fatalf("AK certificate valid until %s, want %s", c.NotAfter, want)
			}
		})
	}
}

// TestECCEK: devices whose TPMs have only ECC EKs (swtpm's P-384 at its
// persistent handle; a P-256 of template L-2 made from its template) are
// attested end to end, with manufacturer roots configured: the challenge
// is encrypted to the ECC EK, the TPM answers it, and the AK certificate
// names the device by its ECC EK. A challenge for one TPM's ECC EK is not
// answered by another; an ECC EK certificate from an unconfigured
// manufacturer, an ECC EK without its certificate, and an ECC EK on a
// curve devid does not take are refused. A device registered by its RSA
// EK is not that TPM's ECC EK.
func TestECCEK(t *testing.T) {
	p384 := newDeviceWith(t, swtpmtest.Options{ECCOnly: true})
	p256 := newDeviceWith(t, swtpmtest.Options{ECCOnly: true, ECCP256: true, TransientEKs: true})
	stranger := newDeviceWith(t, swtpmtest.Options{ECCOnly: true})
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, d := range []*device{p384, p256} {
		roots.AddCert(d.sw.EKRoot)
		inter.AddCert(d.sw.EKIssuer)
	}
	f := newFixture(t, roots, inter)
	for name, d := range map[string]*device{"p384": p384, "p256": p256, "stranger": stranger} {
		d.register(t, f, name)
	}
	for name, c := range map[string]struct {
		d     *device
		curve string
	}{"p384": {p384, "P-384"}, "p256": {p256, "P-256"}} {
		if pub, ok := c.d.ek.Public.(*ecdsa.PublicKey); !ok || pub.Curve.Params().Name != c.curve {
			t.Fatalf("%s: the EK is a %s, want ECC %s", name, c.d.ek.Type(), c.curve)
		}
		r, err := f.ca.Attest(c.d.req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp, err := f.ca.Secret(&attestca.SecretRequest{Secret: c.d.activate(t, r), DeviceID: c.d.ek.DeviceID})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		akCert, err := x509.ParseCertificate(resp.Chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if !akCert.PublicKey.(*rsa.PublicKey).Equal(c.d.ak.Public()) || len(akCert.URIs) != 1 || akCert.URIs[0].String() != c.d.ek.DeviceID {
			t.Errorf("%s: the AK certificate is not for the AK and %s: %v", name, c.d.ek.DeviceID, akCert.URIs)
		}
	}

	// P-384's EK with P-256's AK: a challenge P-256's TPM cannot answer.
	r := *p384.req
	r.AttestParams = p256.req.AttestParams
	resp, err := f.ca.Attest(&r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p256.ak.ActivateCredential(p256.ek, attest.EncryptedCredential{Credential: resp.Credential, Secret: resp.Secret}); err == nil {
		t.Fatalf("a TPM activated a credential made for another TPM's ECC EK, giving %x", got)
	}

	_, err = f.ca.Attest(stranger.req)
	wantRefusal(t, err, attestca.ErrRefused, "does not chain to a configured manufacturer root")
	r = *p384.req
	r.EKCerts = nil
	_, err = f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrRefused, "EK certificate is required")

	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	r = *p384.req
	r.EKPub, _ = x509.MarshalPKIXPublicKey(&p521.PublicKey)
	r.EKCerts = nil
	_, err = f.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrInvalid, "curve P-521")

	// A TPM with both kinds, registered by its RSA EK: its ECC EK names
	// no registered device.
	both := newDevice(t)
	eks, err := both.sw.TPM.EKs()
	if err != nil {
		t.Fatal(err)
	}
	if len(eks) != 2 || eks[1].Type() != "ECC-P-384" {
		t.Fatalf("EKs of swtpm: %d, want the RSA and the P-384 EK", len(eks))
	}
	r = *both.req
	r.EKPub, _ = x509.MarshalPKIXPublicKey(eks[1].Public)
	r.EKCerts = [][]byte{eks[1].Certificate.Raw}
	fb := newFixture(t, both.sw.EKRoots(), both.sw.EKIntermediates())
	both.register(t, fb, "both")
	if _, err := fb.ca.Attest(both.req); err != nil {
		t.Fatal(err)
	}
	_, err = fb.ca.Attest(&r)
	wantRefusal(t, err, attestca.ErrRefused, "is not registered")
}
