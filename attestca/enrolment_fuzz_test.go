package attestca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/inventory"
)

// fuzzEnrolments is a pending device web-1 (host) with one live token, for
// FuzzEnrolment.
type fuzzEnrolments struct {
	tok enroltoken.Token
}

func (f fuzzEnrolments) Device(string) (*inventory.Device, error) {
	return nil, &inventory.Error{Kind: inventory.ErrNotFound, Msg: "no device"}
}
func (f fuzzEnrolments) User(string) (*inventory.User, error) {
	return nil, &inventory.Error{Kind: inventory.ErrNotFound, Msg: "no user"}
}
func (f fuzzEnrolments) CheckEnrolment(h enroltoken.Hash, claim inventory.EnrolmentClaim, ekID string) (*inventory.Device, *inventory.EnrolmentToken, error) {
	if h != f.tok.Hash() {
		return nil, nil, &inventory.Error{Kind: inventory.ErrNotFound, Field: "token", Msg: "unknown enrolment token (sha256 " + h.Short() + ")"}
	}
	d := &inventory.Device{ID: inventory.PendingIDPrefix + "x", Name: "web-1", Kind: inventory.KindHost, Status: inventory.StatusPending}
	if claim.Kind != "" && claim.Kind != d.Kind || claim.Name != "" && claim.Name != d.Name {
		return nil, nil, &inventory.Error{Kind: inventory.ErrConflict, Field: "token", Msg: "enrolment token for another device"}
	}
	return d, &inventory.EnrolmentToken{}, nil
}
func (f fuzzEnrolments) BindEnrolment(string, enroltoken.Hash, inventory.EnrolmentClaim, *deviceid.EK) (*inventory.Device, error) {
	return nil, errors.New("not in this test")
}
func (f fuzzEnrolments) RecordAttestation(inventory.Attestation) error { return nil }

// FuzzEnrolment: the enrolment part of an attestation request, as the CA
// decodes it (strict JSON) and checks it, never panics; a request it
// refuses gets an *Error (400 or 403), whose message never holds the
// token presented, nor any 20 bytes of it; one it accepts names the
// pending device's live token.
func FuzzEnrolment(f *testing.F) {
	tok, err := enroltoken.New()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"token":"` + tok.Text() + `","kind":"host","name":"web-1"}`,
		`{"token":"` + tok.Text() + `"}`,
		`{"token":"` + tok.Text() + `","kind":"workstation"}`,
		`{"token":"` + tok.Text() + `","kind":"desktop"}`,
		`{"token":"devid-enrol-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}`,
		`{"token":"devid-enrol-abc"}`,
		`{"token":"","name":"` + strings.Repeat("n", 300) + `"}`,
		`{"token":"x","extra":1}`,
		`null`,
	} {
		f.Add([]byte(seed))
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ca := &CA{cfg: Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, devices: fuzzEnrolments{tok}}
	f.Fuzz(func(t *testing.T, body []byte) {
		var e *Enrolment
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&e) != nil {
			return
		}
		rec, bound, err := ca.checkEnrolment(&AttestRequest{Enrolment: e}, "urn:ek:sha256:fuzz", &ek.PublicKey)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrRefused)) {
				t.Fatalf("error %v (%T) is not a 400 or 403", err, err)
			}
			if e != nil && len(e.Token) >= 20 {
				for i := 0; i+20 <= len(e.Token); i++ {
					if strings.Contains(err.Error(), e.Token[i:i+20]) {
						t.Fatalf("the refusal %q holds the token presented", err)
					}
				}
			}
			return
		}
		if bound {
			t.Fatalf("bound: no device is this TPM here")
		}
		if e == nil {
			if rec != nil {
				t.Fatalf("no enrolment, but a record %+v", rec)
			}
			return
		}
		if rec == nil || rec.TokenHash != tok.Hash().String() || rec.Device != "web-1" || e.Token != tok.Text() {
			t.Fatalf("accepted %+v: record %+v", e, rec)
		}
	})
}
