package caserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/issuance/tpmkey"
	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/legacy/tpm2"
	"golang.org/x/crypto/acme"
)

// TestAttestedKeyMustBeTPMResident: devid-ca refuses a device-attest-01
// challenge whose attested key may leave the TPM (no fixedTPM), with an
// ACME problem, before step-ca sees it.
func TestAttestedKeyMustBeTPMResident(t *testing.T) {
	ca := catest.Start(t, nil)
	// Bounds a hang only: the ACME client retries some errors forever.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ac := &acme.Client{Key: accountKey, HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}},
		DirectoryURL: ca.URL + "/acme/" + wire.AttestProvisioner + "/directory"}
	if _, err := ac.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	order, err := ac.AuthorizeOrder(ctx, []acme.AuthzID{{Type: "permanent-identifier", Value: "urn:ek:sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}})
	if err != nil {
		t.Fatal(err)
	}
	authz, err := ac.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	var chal *acme.Challenge
	for _, ch := range authz.Challenges {
		if ch.Type == "device-attest-01" {
			chal = ch
		}
	}
	if chal == nil {
		t.Fatal("no device-attest-01 challenge")
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := tpm2.Public{Type: tpm2.AlgECC, NameAlg: tpm2.AlgSHA256,
		// As go-attestation makes device keys, but duplicable.
		Attributes: (tpm2.FlagSignerDefault ^ tpm2.FlagRestricted) &^ tpm2.FlagFixedTPM,
		ECCParameters: &tpm2.ECCParams{Sign: &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256}, CurveID: tpm2.CurveNISTP256,
			Point: tpm2.ECPoint{XRaw: k.X.FillBytes(make([]byte, 32)), YRaw: k.Y.FillBytes(make([]byte, 32))}}}
	pubArea, err := pub.Encode()
	if err != nil {
		t.Fatal(err)
	}
	attObj, err := cbor.Marshal(map[string]any{"fmt": "tpm", "attStmt": map[string]any{
		"ver": "2.0", "alg": int64(-257), "x5c": []any{[]byte{1}}, "sig": []byte{1}, "certInfo": []byte{1}, "pubArea": pubArea}})
	if err != nil {
		t.Fatal(err)
	}
	chal.Payload, _ = json.Marshal(map[string]string{"attObj": base64.RawURLEncoding.EncodeToString(attObj)})
	_, err = ac.Accept(ctx, chal)
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.ProblemType != tpmkey.ProblemType ||
		!strings.HasPrefix(ae.Detail, "key is not TPM-resident: the attested key lacks the TPM object attributes fixedTPM") {
		t.Fatalf("challenge with a duplicable key: %v (%+v)", err, ae)
	}
	// Nothing reached step-ca: the challenge is still pending. (Not
	// GetChallenge: step-ca takes a POST-as-GET to a device-attest-01
	// challenge for an answer without a payload, a 500 the client retries.)
	az, err := ac.GetAuthorization(ctx, authz.URI)
	if err != nil || az.Status != acme.StatusPending {
		t.Fatalf("authorization after the refusal: %+v %v", az, err)
	}
	for _, ch := range az.Challenges {
		if ch.Type == "device-attest-01" && ch.Status != acme.StatusPending {
			t.Fatalf("challenge after the refusal: %+v", ch)
		}
	}
}
