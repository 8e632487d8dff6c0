package attestca_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/inventory"
)

// pending registers a device without its EK, and returns a token for it.
func (f *fixture) pending(t *testing.T, name, kind string) enroltoken.Token {
	t.Helper()
	if _, err := f.inv.AddDevice("op", inventory.NewDevice{Name: name, Kind: kind, Serial: "SN-" + name}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.inv.IssueToken("op", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// withToken is d's request presenting tok, claiming kind.
func (d *device) withToken(tok enroltoken.Token, kind string) *attestca.AttestRequest {
	r := *d.req
	r.Enrolment = &attestca.Enrolment{Token: tok.Text(), Kind: kind}
	return &r
}

// enrol runs a whole attestation with req, and returns the AK certificate.
func (d *device) enrol(t *testing.T, f *fixture, req *attestca.AttestRequest) (*x509.Certificate, error) {
	t.Helper()
	r, err := f.ca.Attest(req)
	if err != nil {
		return nil, err
	}
	resp, err := f.ca.Secret(&attestca.SecretRequest{Secret: d.activate(t, r), DeviceID: d.ek.DeviceID})
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(resp.Chain[0])
}

// TestEnrolmentToken: a TPM no device has, presenting a token for a
// pending device, is bound to it after credential activation and gets its
// AK certificate; presenting the token again it is that device; another
// TPM presenting it is refused, saying who used it and when.
func TestEnrolmentToken(t *testing.T) {
	f := newFixture(t, nil, nil)
	a, b := newDevice(t), newDevice(t)
	tok := f.pending(t, "web-9", "host")

	// Without the token the TPM is not registered; the device is pending.
	_, err := f.ca.Attest(a.req)
	wantRefusal(t, err, attestca.ErrRefused, "is not registered")

	r, err := f.ca.Attest(a.withToken(tok, "host"))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is bound before the TPM has proved it holds the EK.
	if d, err := f.inv.Device("web-9"); err != nil || !d.Pending() {
		t.Fatalf("after /attest: %+v, %v; want still pending", d, err)
	}
	f.clk.Advance(time.Second)
	resp, err := f.ca.Secret(&attestca.SecretRequest{Secret: a.activate(t, r), DeviceID: a.ek.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	akCert, err := x509.ParseCertificate(resp.Chain[0])
	if err != nil || akCert.URIs[0].String() != a.ek.DeviceID {
		t.Fatalf("AK certificate: %v, %v", akCert.URIs, err)
	}
	usedAt := f.clk.Now().UTC().Round(0)
	d, err := f.inv.Device("web-9")
	if err != nil || d.ID != a.ek.DeviceID || d.Status != inventory.StatusActive || !bytes.Equal(d.EKCert, a.ek.Certificate.Raw) {
		t.Fatalf("after /secret: %+v, %v; want web-9 active with a's EK and EK certificate", d, err)
	}
	last, err := f.inv.LastAttestation(d.ID)
	if err != nil || last == nil || !last.Time.Equal(usedAt) || last.Token != tok.Hash().Short() || last.Model == "" {
		t.Fatalf("last attestation %+v, %v", last, err)
	}
	audit, err := f.inv.Audit(d.ID)
	// Its history while pending, then the binding by the Attestation CA.
	if err != nil || len(audit) != 3 || audit[0].Action != "device.add" || audit[1].Action != "device.token" ||
		audit[2].Action != "device.bind" || audit[2].Actor != attestca.Actor {
		t.Fatalf("audit %+v, %v", audit, err)
	}

	// The same TPM with its token again (a restart with the token still
	// configured): just the device. Without it too.
	for _, req := range []*attestca.AttestRequest{a.withToken(tok, "host"), a.req} {
		if _, err := a.enrol(t, f, req); err != nil {
			t.Fatalf("the bound TPM again: %v", err)
		}
	}
	// Another TPM with the used token: refused at /attest.
	_, err = f.ca.Attest(b.withToken(tok, "host"))
	wantRefusal(t, err, attestca.ErrRefused, fmt.Sprintf(`enrolment token already used (by device "web-9", %s, at %s)`, a.ek.DeviceID, usedAt.Format(time.RFC3339)))

	// The bound device quarantined: its token does not get it past that.
	if _, err := f.inv.SetStatus("op", "web-9", inventory.StatusQuarantined, "check"); err != nil {
		t.Fatal(err)
	}
	_, err = f.ca.Attest(a.withToken(tok, "host"))
	wantRefusal(t, err, attestca.ErrRefused, "is quarantined")
}

// TestEnrolmentTokenRefusals: every bad token is refused, with a reason
// that says what is wrong, before any challenge is sent.
func TestEnrolmentTokenRefusals(t *testing.T) {
	f := newFixture(t, nil, nil)
	a := newDevice(t)
	hostTok := f.pending(t, "web-1", "host")
	laptopTok := f.pending(t, "laptop-1", "workstation")
	stranger, _ := enroltoken.New()

	_, err := f.ca.Attest(a.withToken(stranger, "host"))
	wantRefusal(t, err, attestca.ErrRefused, "unknown enrolment token (sha256 "+stranger.Hash().Short()+")")
	bad := a.withToken(hostTok, "host")
	bad.Enrolment.Token = bad.Enrolment.Token[:len(bad.Enrolment.Token)-1]
	_, err = f.ca.Attest(bad)
	wantRefusal(t, err, attestca.ErrInvalid, "enrolment token: enroltoken: malformed token: 69 characters")
	_, err = f.ca.Attest(a.withToken(hostTok, "laptop"))
	wantRefusal(t, err, attestca.ErrInvalid, `enrolment kind: unknown kind "laptop"`)

	// A laptop's token on a host, a host's on a laptop, another's name.
	_, err = f.ca.Attest(a.withToken(laptopTok, "host"))
	wantRefusal(t, err, attestca.ErrRefused, `enrolment token for another device: it is for "laptop-1", a workstation, and this device is a host`)
	_, err = f.ca.Attest(a.withToken(hostTok, "workstation"))
	wantRefusal(t, err, attestca.ErrRefused, `it is for "web-1", a host, and this device is a workstation`)
	named := a.withToken(hostTok, "host")
	named.Enrolment.Name = "web-2"
	_, err = f.ca.Attest(named)
	wantRefusal(t, err, attestca.ErrRefused, `it is for "web-1", and this device says it is "web-2"`)

	// Superseded, expired.
	newer, _, err := f.inv.IssueToken("op", "web-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ca.Attest(a.withToken(hostTok, "host"))
	wantRefusal(t, err, attestca.ErrRefused, `enrolment token for device "web-1" was superseded at`)
	expires := f.clk.Now().UTC().Round(0).Add(time.Hour)
	f.clk.Advance(time.Hour)
	_, err = f.ca.Attest(a.withToken(newer, "host"))
	wantRefusal(t, err, attestca.ErrRefused, `enrolment token for device "web-1" expired at `+expires.Format(time.RFC3339)+": issue a new one with `devid device token web-1`")

	// A device no longer pending: retired.
	if _, err := f.inv.SetStatus("op", "laptop-1", inventory.StatusRetired, "lost"); err != nil {
		t.Fatal(err)
	}
	_, err = f.ca.Attest(a.withToken(laptopTok, "workstation"))
	wantRefusal(t, err, attestca.ErrRefused, `device "laptop-1" is retired, not pending`)

	// A TPM that is a device already is never bound by a token.
	a.register(t, f, "a")
	live := f.pending(t, "web-3", "host")
	_, err = f.ca.Attest(a.withToken(live, "host"))
	wantRefusal(t, err, attestca.ErrRefused, `this TPM is already device "a"`)

	// Over HTTP: 403 with the reason, 400 for a token that is not one.
	for _, c := range []struct {
		req  *attestca.AttestRequest
		code int
		msg  string
	}{
		{a.withToken(stranger, "host"), http.StatusForbidden, "unknown enrolment token"},
		{bad, http.StatusBadRequest, "malformed token"},
	} {
		body, _ := json.Marshal(c.req)
		rec := httptest.NewRecorder()
		f.ca.ServeHTTP(rec, httptest.NewRequest("POST", wire.AttestPath, bytes.NewReader(body)))
		var out struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != c.code || !strings.Contains(out.Error, c.msg) {
			t.Errorf("HTTP %d %s, want %d with %q", rec.Code, rec.Body, c.code, c.msg)
		}
		if strings.Contains(rec.Body.String(), c.req.Enrolment.Token) {
			t.Errorf("the answer quotes the token: %s", rec.Body)
		}
	}
}

// TestEnrolmentTokenEKRoots: where manufacturer roots are configured, the
// EK certificate is checked first: a token does not get a TPM past them.
func TestEnrolmentTokenEKRoots(t *testing.T) {
	a, b := newDevice(t), newDevice(t)
	f := newFixture(t, b.sw.EKRoots(), b.sw.EKIntermediates())
	tok := f.pending(t, "web-1", "host")
	_, err := f.ca.Attest(a.withToken(tok, "host"))
	wantRefusal(t, err, attestca.ErrRefused, "does not chain to a configured manufacturer root")
	noCert := b.withToken(tok, "host")
	noCert.EKCerts = nil
	_, err = f.ca.Attest(noCert)
	wantRefusal(t, err, attestca.ErrRefused, "EK certificate is required")
	if _, err := b.enrol(t, f, b.withToken(tok, "host")); err != nil {
		t.Fatalf("b, whose EK certificate chains: %v", err)
	}
}

// TestEnrolmentTokenConcurrentSecret: two TPMs pass /attest with one token,
// and finish /secret at once: exactly one is bound, the other is refused
// saying the token is used.
func TestEnrolmentTokenConcurrentSecret(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			f := newFixture(t, nil, nil)
			devs := []*device{newDevice(t), newDevice(t)}
			tok := f.pending(t, "laptop-1", "workstation")
			secrets := make([][]byte, len(devs))
			for i, d := range devs {
				r, err := f.ca.Attest(d.withToken(tok, "workstation"))
				if err != nil {
					t.Fatal(err)
				}
				secrets[i] = d.activate(t, r)
			}
			errs := make([]error, len(devs))
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, d := range devs {
				wg.Go(func() {
					<-start
					_, errs[i] = f.ca.Secret(&attestca.SecretRequest{Secret: secrets[i], DeviceID: d.ek.DeviceID})
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				if err == nil {
					if winner >= 0 {
						t.Fatal("both TPMs were bound with one token")
					}
					winner = i
				}
			}
			if winner < 0 {
				t.Fatalf("neither TPM was bound: %v", errs)
			}
			wantRefusal(t, errs[1-winner], attestca.ErrRefused, `enrolment token already used (by device "laptop-1", `+devs[winner].ek.DeviceID)
			d, err := f.inv.Device("laptop-1")
			if err != nil || d.ID != devs[winner].ek.DeviceID {
				t.Fatalf("laptop-1 is %+v, %v; want the winner's", d, err)
			}
			if _, err := f.inv.Device(devs[1-winner].ek.DeviceID); err == nil {
				t.Fatal("the loser's TPM is a device")
			}
		})
	}
}
