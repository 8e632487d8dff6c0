// Package tpmkey is devid-ca's own check that the key a device attests in
// ACME device-attest-01 cannot leave its TPM: the second link of devid's
// proof that the keys it signs are TPM-resident.
//
// # The proof
//
//  1. The device's Attestation Key is certified by devid's Attestation CA
//     only after TPM2_ActivateCredential with the registered EK (package
//     attestca).
//  2. In ACME device-attest-01 (format tpm), the device creates a key in
//     its TPM and has the AK certify it (TPM2_Certify) over the SHA-256 of
//     the challenge's fresh key authorization. step-ca checks the AK
//     chain, the signature, that the certified name is the key's public
//     area, and the key authorization; it issues the device certificate
//     only for that key.
//  3. Here, before step-ca sees the challenge: the certified key's public
//     area must have the object attributes of a key that cannot leave the
//     TPM — fixedTPM (it cannot be duplicated out of this TPM),
//     fixedParent (nor moved to another parent), sensitiveDataOrigin (the
//     TPM made it; it was not imported from outside), sign (it signs), and
//     not restricted (it signs what the SSH client gives it). Decrypt is
//     allowed: it does not make a key leave the TPM (go-attestation's RSA
//     keys have it).
//  4. At SSH signing (package issuance): the SSH public key must be the
//     device certificate's key.
//
// step-ca's own verification (go-attestation's CertificationParameters.Verify
// in the versions devid uses) also looks at some of these attributes, but
// that is not a documented promise of step-ca: devid checks them itself,
// with a refusal that says what is wrong.
//
// # What is checked
//
// Guard checks every POST under /acme/ whose body is a JWS (step-ca's
// parser, go.step.sm/crypto/jose) whose payload is a JSON object with a
// non-empty "attObj" (decoded as step-ca decodes it): only the
// device-attest-01 challenge has one. Anything else passes unchanged, and
// step-ca answers it. An attObj that does not parse, holds duplicate CBOR
// map keys (which parsers may read differently), is not format tpm, or
// whose pubArea lacks the attributes is refused with an ACME problem
// (403, badAttestationStatement) whose detail starts "key is not
// TPM-resident: ". The JWS signature is not checked here: step-ca checks
// it, over the same bytes, if the request gets that far.
package tpmkey

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/legacy/tpm2"
	"go.step.sm/crypto/jose"
)

// NotTPMResident starts every refusal.
const NotTPMResident = "key is not TPM-resident: "

// ProblemType is the ACME error type of a refusal.
const ProblemType = "urn:ietf:params:acme:error:badAttestationStatement"

// Error is a refusal: the attested key is not TPM-resident, or the
// attestation could not be read.
type Error struct{ Msg string }

func (e *Error) Error() string { return NotTPMResident + e.Msg }

func refuse(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Required are the object attributes a TPM-resident key must have; Refused
// those it must not.
const (
	Required = tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin | tpm2.FlagSign
	Refused  = tpm2.FlagRestricted
)

var attrNames = []struct {
	flag tpm2.KeyProp
	name string
	why  string
}{
	{tpm2.FlagFixedTPM, "fixedTPM", "it could be duplicated out of the TPM"},
	{tpm2.FlagFixedParent, "fixedParent", "it could be duplicated to another parent"},
	{tpm2.FlagSensitiveDataOrigin, "sensitiveDataOrigin", "it was not made by the TPM (an imported key may have copies outside)"},
	{tpm2.FlagSign, "sign", "it cannot sign"},
}

// CheckPublic checks a TPMT_PUBLIC (an attStmt's pubArea).
func CheckPublic(pubArea []byte) error {
	pub, err := tpm2.DecodePublic(pubArea)
	if err != nil {
		return refuse("the attested key's public area does not parse: %v", err)
	}
	var missing []string
	for _, a := range attrNames {
		if pub.Attributes&a.flag == 0 {
			missing = append(missing, a.name+" ("+a.why+")")
		}
	}
	if len(missing) > 0 {
		return refuse("the attested key lacks the TPM object attributes %s", strings.Join(missing, ", "))
	}
	if pub.Attributes&Refused != 0 {
		return refuse("the attested key is restricted: it signs only what the TPM made, not an SSH login")
	}
	return nil
}

// payload is what step-ca decodes a device-attest-01 payload into
// (acme.payloadType).
type payload struct {
	AttObj string `json:"attObj"`
	Error  string `json:"error"`
}

// attestationObject is step-ca's acme.attestationObject.
type attestationObject struct {
	Format       string         `json:"fmt"`
	AttStatement map[string]any `json:"attStmt,omitempty"`
}

// strictCBOR is step-ca's CBOR decoder (default options) but refusing
// duplicate map keys.
func strictCBOR() (cbor.DecMode, error) {
	return cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF}.DecMode()
}

// CheckPayload checks a challenge's JSON payload. It reports whether the
// payload is an attestation (it has an attObj), and for one, whether its
// key is TPM-resident (nil) or not (an *Error).
func CheckPayload(p []byte) (bool, error) {
	var pl payload
	if json.Unmarshal(p, &pl) != nil || pl.AttObj == "" {
		return false, nil // step-ca refuses or answers it; no attestation here
	}
	raw, err := base64.RawURLEncoding.DecodeString(pl.AttObj)
	if err != nil {
		return true, refuse("attObj is not base64url: %v", err)
	}
	dm, err := strictCBOR()
	if err != nil {
		return true, fmt.Errorf("tpmkey: CBOR decoder: %w", err)
	}
	var att attestationObject
	if err := dm.Unmarshal(raw, &att); err != nil {
		return true, refuse("attObj is not a CBOR attestation object: %v", err)
	}
	if att.Format != "tpm" {
		return true, refuse("attestation format %q: devid accepts only tpm", att.Format)
	}
	pubArea, ok := att.AttStatement["pubArea"].([]byte)
	if !ok || len(pubArea) == 0 {
		return true, refuse("the attestation statement has no pubArea")
	}
	return true, CheckPublic(pubArea)
}

// CheckJWS checks an ACME request body (a JWS, flattened JSON in ACME):
// as CheckPayload on its payload. A body that is no JWS is no
// attestation.
func CheckJWS(body []byte) (bool, error) {
	jws, err := jose.ParseJWS(string(body))
	if err != nil {
		return false, nil
	}
	return CheckPayload(jws.UnsafePayloadWithoutVerification())
}

// Problem is an ACME problem document (RFC 8555, section 6.7).
type Problem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
	Status int    `json:"status"`
}

// Guard checks the attestation in every POST under /acme/ (CheckJWS) before
// next sees it, and answers a refusal itself. The body is read whole
// (devid-ca bounds it before) and given to next unchanged.
func Guard(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !underACME(r) || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		isAtt, err := CheckJWS(body)
		var te *Error
		switch {
		case errors.As(err, &te):
			log.Warn("device-attest-01 refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(Problem{Type: ProblemType, Detail: err.Error(), Status: http.StatusForbidden})
			return
		case isAtt:
			log.Info("device-attest-01: the attested key is TPM-resident", "path", r.URL.Path)
		}
		next.ServeHTTP(w, r)
	})
}

// underACME: the path, decoded or as sent, is below /acme/ (where the
// router may look at either).
func underACME(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/acme/") || strings.HasPrefix(r.URL.EscapedPath(), "/acme/") || strings.HasPrefix(r.URL.RawPath, "/acme/")
}
