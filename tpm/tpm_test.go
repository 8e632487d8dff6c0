package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
)

func mustEK(t *testing.T, tp *tpm.TPM) *tpm.EK {
	t.Helper()
	ek, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

func mustAK(t *testing.T, tp *tpm.TPM) *tpm.AK {
	t.Helper()
	ak, err := tp.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	return ak
}

// TestEKAndDeviceID: the TPM has an RSA EK with a certificate for it; its
// device ID is deviceid's computation from the key and from the
// certificate, and stays the same after swtpm restarts on the same state.
// A closed TPM says so.
func TestEKAndDeviceID(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	ek := mustEK(t, sw.TPM)

	if ek.Certificate == nil {
		t.Fatal("no EK certificate")
	}
	rsaPub, ok := ek.Public.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("EK is a %T, want the RSA EK", ek.Public)
	}
	if !rsaPub.Equal(ek.Certificate.PublicKey) {
		t.Error("EK certificate is for another key")
	}
	if rsaPub.N.BitLen() != 2048 {
		t.Errorf("EK is RSA-%d, want RSA-2048", rsaPub.N.BitLen())
	}
	if ek.Handle != tpm.RSAEKHandle || ek.CertIndex != tpm.RSACertIndex {
		t.Errorf("EK at %#x, certificate at NV %#x; want %#x, %#x", ek.Handle, ek.CertIndex, tpm.RSAEKHandle, tpm.RSACertIndex)
	}
	der, err := x509.MarshalPKIXPublicKey(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if want := "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:]); ek.DeviceID != want {
		t.Errorf("DeviceID = %q, want %q", ek.DeviceID, want)
	}
	for name, f := range map[string]func() (string, error){
		"FromPublicKey": func() (string, error) { return deviceid.FromPublicKey(ek.Public) },
		"ParseEK(certificate)": func() (string, error) {
			p, err := deviceid.ParseEK(ek.Certificate.Raw)
			if err != nil {
				return "", err
			}
			return p.ID(), nil
		},
	} {
		if id, err := f(); err != nil || id != ek.DeviceID {
			t.Errorf("deviceid.%s = %q, %v; want %q", name, id, err, ek.DeviceID)
		}
	}

	old := sw.TPM
	if err := sw.Restart(); err != nil {
		t.Fatal(err)
	}
	if again := mustEK(t, sw.TPM); again.DeviceID != ek.DeviceID || !bytes.Equal(again.Certificate.Raw, ek.Certificate.Raw) {
		t.Errorf("after a restart: device ID %q, want %q (and the same certificate)", again.DeviceID, ek.DeviceID)
	}
	if _, err := old.EK(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("EK of a closed TPM: %v, want ErrClosed", err)
	}
	if err := old.Close(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// TestInfo: swtpm reports IBM's vendor ID and its "SW   TPM" model.
func TestInfo(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	info, err := sw.TPM.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Manufacturer != 0x49424D00 || info.Model != "SW   TPM" {
		t.Errorf("Info = %+v, want manufacturer 0x49424D00 (IBM), model %q", info, "SW   TPM")
	}
	if want := fmt.Sprintf("%d.%d", info.FirmwareMajor, info.FirmwareMinor); info.FirmwareVersion() != want || info.FirmwareMajor == 0 {
		t.Errorf("FirmwareVersion = %q, want %q, non-zero", info.FirmwareVersion(), want)
	}
}

// TestEKCertificateVerifies: the EK certificate chains to the TPM's own
// local CA, and not to the CA of another manufactured TPM.
func TestEKCertificateVerifies(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	ek := mustEK(t, sw.TPM)
	chains, err := tpm.VerifyEKCertificate(ek.Certificate, x509.VerifyOptions{
		Roots:         sw.EKRoots(),
		Intermediates: sw.EKIntermediates(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 1 || len(chains[0]) != 3 || !chains[0][1].Equal(sw.EKIssuer) || !chains[0][2].Equal(sw.EKRoot) {
		t.Errorf("chains = %v, want [[EK, issuer, root]]", chains)
	}

	// Another CA made the same way: same names, different keys.
	other, err := swtpmtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]x509.VerifyOptions{
		"other root and issuer":     {Roots: other.EKRoots(), Intermediates: other.EKIntermediates()},
		"other root, own issuer":    {Roots: other.EKRoots(), Intermediates: sw.EKIntermediates()},
		"own issuer, no root":       {Roots: x509.NewCertPool(), Intermediates: sw.EKIntermediates()},
		"own root, other issuer":    {Roots: sw.EKRoots(), Intermediates: other.EKIntermediates()},
		"own root, no intermediate": {Roots: sw.EKRoots()},
	} {
		if _, err := tpm.VerifyEKCertificate(ek.Certificate, opts); err == nil {
			t.Errorf("verified with %s", name)
		}
	}
}

// TestActivateCredential: an attestation CA's challenge, made with
// go-attestation's server side for the TPM's EK and AK, is answered by that
// TPM; a tampered challenge, or one made for another TPM's EK, is not.
func TestActivateCredential(t *testing.T) {
	t.Parallel()
	sw, other := swtpmtest.New(t), swtpmtest.New(t)
	ek, otherEK := mustEK(t, sw.TPM), mustEK(t, other.TPM)
	if ek.DeviceID == otherEK.DeviceID {
		t.Fatalf("two manufactured TPMs share device ID %s", ek.DeviceID)
	}
	ak := mustAK(t, sw.TPM)
	if _, ok := ak.Public().(*rsa.PublicKey); !ok {
		t.Fatalf("AK public key is %T, want *rsa.PublicKey", ak.Public())
	}

	challenge := func(ekPub crypto.PublicKey) ([]byte, *attest.EncryptedCredential) {
		t.Helper()
		ap := attest.ActivationParameters{EK: ekPub, AK: ak.AttestationParameters()}
		secret, ec, err := ap.Generate()
		if err != nil {
			t.Fatal(err)
		}
		return secret, ec
	}

	secret, ec := challenge(ek.Public)
	got, err := ak.ActivateCredential(ek, *ec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("activated secret %x, want %x", got, secret)
	}

	flip := func(b []byte) []byte {
		b = bytes.Clone(b)
		b[len(b)/2] ^= 1
		return b
	}
	_, ec = challenge(ek.Public)
	for name, bad := range map[string]attest.EncryptedCredential{
		"tampered secret":     {Credential: ec.Credential, Secret: flip(ec.Secret)},
		"tampered credential": {Credential: flip(ec.Credential), Secret: ec.Secret},
	} {
		if got, err := ak.ActivateCredential(ek, bad); err == nil {
			t.Errorf("%s: activated, giving %x", name, got)
		} else if !strings.HasPrefix(err.Error(), "tpm: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
	_, ec = challenge(otherEK.Public)
	if got, err := ak.ActivateCredential(ek, *ec); err == nil {
		t.Errorf("challenge for another TPM's EK: activated, giving %x", got)
	}
}

// TestCertifiedKey: a key made by an AK is an ECDSA P-256 key whose
// certification, carrying the qualifying data, verifies against the AK's
// public key and no other, and whose signatures verify.
func TestCertifiedKey(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	ak := mustAK(t, sw.TPM)
	qualifying := sha256.Sum256([]byte("token.thumbprint"))
	key, err := ak.NewKey(qualifying[:])
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()

	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve.Params().Name != "P-256" {
		t.Fatalf("key is %T %v, want ECDSA P-256", key.Public(), key.Public())
	}
	cp := key.CertificationParameters()
	if err := cp.Verify(attest.VerifyOpts{Public: ak.Public(), Hash: crypto.SHA256}); err != nil {
		t.Fatalf("certification does not verify against the AK: %v", err)
	}
	att, err := legacy.DecodeAttestationData(cp.CreateAttestation)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(att.ExtraData, qualifying[:]) {
		t.Errorf("certification carries qualifying data %x, want %x", att.ExtraData, qualifying)
	}
	certified, err := legacy.DecodePublic(cp.Public)
	if err != nil {
		t.Fatal(err)
	}
	if certifiedKey, err := certified.Key(); err != nil || !pub.Equal(certifiedKey) {
		t.Errorf("certified key %v (%v) is not the key %v", certifiedKey, err, pub)
	}

	otherAK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Verify(attest.VerifyOpts{Public: &otherAK.PublicKey, Hash: crypto.SHA256}); err == nil {
		t.Error("certification verifies against another key")
	}
	tampered := cp
	tampered.CreateAttestation = bytes.Clone(cp.CreateAttestation)
	tampered.CreateAttestation[len(tampered.CreateAttestation)-1] ^= 1
	if err := tampered.Verify(attest.VerifyOpts{Public: ak.Public(), Hash: crypto.SHA256}); err == nil {
		t.Error("tampered certification verifies")
	}

	digest := sha256.Sum256([]byte("message"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Error("signature does not verify")
	}
	var _ crypto.Signer = key
}

// TestConcurrentUse: goroutines sharing a TPM, an AK and a key read the EK
// and info, sign, and activate credentials at once, each getting right
// answers (run with -race).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	ek := mustEK(t, sw.TPM)
	ak := mustAK(t, sw.TPM)
	key, err := ak.NewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()

	const goroutines, rounds = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds)
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				if err := concurrentRound(sw.TPM, ek, ak, key, fmt.Sprint(g, r)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func concurrentRound(tp *tpm.TPM, ek *tpm.EK, ak *tpm.AK, key *tpm.Key, msg string) error {
	got, err := tp.EK()
	if err != nil {
		return err
	}
	if got.DeviceID != ek.DeviceID {
		return fmt.Errorf("device ID %q, want %q", got.DeviceID, ek.DeviceID)
	}
	if _, err := tp.Info(); err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(msg))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig) {
		return fmt.Errorf("signature of %q does not verify", msg)
	}
	ap := attest.ActivationParameters{EK: ek.Public, AK: ak.AttestationParameters()}
	secret, ec, err := ap.Generate()
	if err != nil {
		return err
	}
	activated, err := ak.ActivateCredential(ek, *ec)
	if err != nil {
		return err
	}
	if !bytes.Equal(activated, secret) {
		return fmt.Errorf("activated %x, want %x", activated, secret)
	}
	return nil
}

// recordHandler counts the log records whose message contains substr.
type recordHandler struct {
	slog.Handler
	substr string
	n      *atomic.Int32
}

func (h recordHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return nil
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// loaded lists the transient objects and loaded sessions in the TPM behind ch.
func loaded(t *testing.T, ch *tpm.Channel) []tpm2.TPMHandle {
	t.Helper()
	var all []tpm2.TPMHandle
	for _, first := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first) << 24, PropertyCount: 64}.Execute(ch)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, hs.Handle...)
	}
	return all
}

// TestDialFlushesLeftovers: over a unix socket to a swtpm that outlives
// its connections, a client that leaves three transient objects (all of
// libtpms' slots) and two sessions loaded is followed by a connection that
// flushes them, logging each; the device ID is the same on every
// connection.
func TestDialFlushesLeftovers(t *testing.T) {
	t.Parallel()
	// A swtpm that serves one connection after another on a unix socket:
	// unlike a socketpair's, this TPM outlives its connections, and keeps
	// what a client leaves loaded.
	sw := swtpmtest.NewServed(t)
	want, path := sw.EK.DeviceID, sw.Sock

	raw, err := tpm.DialChannel("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := (tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHOwner,
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}).Execute(raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []tpm2.TPMSE{tpm2.TPMSEHMAC, tpm2.TPMSEPolicy} {
		if _, err := (tpm2.StartAuthSession{
			TPMKey:      tpm2.TPMRHNull,
			Bind:        tpm2.TPMRHNull,
			NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			SessionType: typ,
			Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
			AuthHash:    tpm2.TPMAlgSHA256,
		}).Execute(raw); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(loaded(t, raw)); n != 5 {
		t.Fatalf("%d handles loaded, want 5", n)
	}
	raw.Close()

	var flushed atomic.Int32
	logger := slog.New(recordHandler{Handler: slog.DiscardHandler, substr: "flushed leftover", n: &flushed})
	for i := range 2 {
		tp, err := tpm.Dial("unix", path, &tpm.Config{Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		if got := mustEK(t, tp).DeviceID; got != want {
			t.Errorf("connection %d: device ID %q, want %q", i, got, want)
		}
		if err := tp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := flushed.Load(); n != 5 {
		t.Errorf("logged %d flushed handles, want 5", n)
	}
	raw, err = tpm.DialChannel("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if hs := loaded(t, raw); len(hs) != 0 {
		t.Errorf("still loaded: %#x", hs)
	}
}

// trickleConn returns at most one byte per Read, like a socket at its
// worst, and counts the Reads.
type trickleConn struct {
	net.Conn
	reads *atomic.Int64
}

func (c trickleConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p[:min(len(p), 1)])
}

// TestPartialReads: go-attestation and go-tpm work over a connection that
// delivers one byte per Read: the channel hands each response over whole.
func TestPartialReads(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.NewServed(t)
	want, path := sw.EK, sw.Sock

	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int64
	tp, err := tpm.New(tpm.NewChannel(trickleConn{conn, &reads}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek := mustEK(t, tp) // reads the ~1 KiB certificate from NV
	if ek.DeviceID != want.DeviceID || !bytes.Equal(ek.Certificate.Raw, want.Certificate.Raw) {
		t.Errorf("over a trickling connection: EK %s, want %s and the same certificate", ek.DeviceID, want.DeviceID)
	}
	if _, err := tp.Info(); err != nil {
		t.Error(err)
	}
	if n := reads.Load(); n < int64(len(ek.Certificate.Raw)) {
		t.Errorf("only %d reads: the connection did not trickle", n)
	}
}
