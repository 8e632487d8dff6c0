// Package enroll is the device side of devid's enrolment: it proves a
// device's TPM to devid-ca and gets its certificates. devid-hostd uses it,
// and `devid enroll` runs it by hand, both through Client.Enroll: the one
// enrolment sequence, which runs the three steps below, unloads the TPM
// objects it made whatever happens, and says which step failed
// (*StepError). The steps, each a method of Client, are public for what
// needs them apart (a benchmark timing the attestation alone; a test
// issuing several certificates with one device certificate):
//
//  1. Attest: create an RSA Attestation Key (AK) in the TPM and have the
//     Attestation CA certify it (POST /attestation/attest, TPM2_ActivateCredential,
//     POST /attestation/secret). The EK sent, and activated with, is the one
//     that names the device (tpm.TPM.EK: the RSA EK, or an ECC EK on a TPM
//     that has only ECC ones). The AK certificate names the device ID.
//  2. DeviceCertificate: create an ECDSA P-256 key in the TPM, certified by
//     the AK over the ACME key authorization, and complete ACME
//     device-attest-01 (format tpm) against the CA's devid-tpm provisioner.
//     The device certificate's key never leaves the TPM, and the
//     certificate is only ever held in memory.
//  3. SSHCertificate: with the device certificate, sign a one-time token
//     (step-ca's X5C provisioner devid-devices) and ask for an SSH host or
//     user certificate for a public key. The CA decides its key ID and
//     principals.
//
// Only the CA's root (pinned) is trusted, and nothing here imports step-ca:
// this code runs on every host.
package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/tpm"
	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-attestation/attest"
	"go.step.sm/crypto/jose"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/ssh"
)

// Client talks to one devid-ca.
type Client struct {
	caURL string
	hc    *http.Client
	log   *slog.Logger
	now   func() time.Time
	// enrolment gives the token attestations present (SetEnrolment).
	enrolment func() (*wire.Enrolment, error)
}

// New returns a Client for the CA at caURL (https://host:port) trusting
// only roots.
func New(caURL string, roots *x509.CertPool, log *slog.Logger) *Client {
	return &Client{
		caURL: strings.TrimRight(caURL, "/"),
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}},
		log: log,
		now: time.Now,
	}
}

// Attestation is a certified AK.
type Attestation struct {
	DeviceID string
	AK       *tpm.AK
	Chain    []*x509.Certificate // AK certificate, then the Attestation CA
}

// Close unloads the AK from the TPM.
func (a *Attestation) Close() error { return a.AK.Close() }

// Attest creates an AK in t and has the Attestation CA certify it.
func (c *Client) Attest(ctx context.Context, t *tpm.TPM) (*Attestation, error) {
	ek, err := t.EK()
	if err != nil {
		return nil, err
	}
	info, err := t.Info()
	if err != nil {
		return nil, err
	}
	ak, err := t.NewAK()
	if err != nil {
		return nil, err
	}
	att, err := c.AttestAK(ctx, ek, info, ak)
	if err != nil {
		ak.Close()
		return nil, err
	}
	return att, nil
}

// AttestAK has the Attestation CA certify ak, an AK already made in the
// TPM whose EK and Info are given: the same two requests as Attest,
// without making a key. The caller keeps ak (the returned Attestation's
// Close flushes it).
func (c *Client) AttestAK(ctx context.Context, ek *tpm.EK, info tpm.Info, ak *tpm.AK) (*Attestation, error) {
	req := wire.AttestRequest{TPMInfo: wire.TPMInfo{
		Version: 2, Manufacturer: strconv.FormatUint(uint64(info.Manufacturer), 10),
		Model: info.Model, FirmwareVersion: info.FirmwareVersion(),
	}}
	var err error
	if req.EKPub, err = x509.MarshalPKIXPublicKey(ek.Public); err != nil {
		return nil, fmt.Errorf("enroll: EK: %w", err)
	}
	if ek.Certificate != nil {
		req.EKCerts = [][]byte{ek.Certificate.Raw}
	}
	p := ak.AttestationParameters()
	req.AttestParams = wire.AttestationParameters{Public: p.Public, UseTCSDActivationFormat: p.UseTCSDActivationFormat,
		CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}
	if c.enrolment != nil {
		if req.Enrolment, err = c.enrolment(); err != nil {
			return nil, err
		}
	}
	var ar wire.AttestResponse
	if err := c.postJSON(ctx, wire.AttestPath, req, &ar); err != nil {
		return nil, err
	}
	secret, err := ak.ActivateCredential(ek, attest.EncryptedCredential{Credential: ar.Credential, Secret: ar.Secret})
	if err != nil {
		return nil, fmt.Errorf("enroll: credential activation (is this the TPM of the registered EK?): %w", err)
	}
	var sr wire.SecretResponse
	if err := c.postJSON(ctx, wire.SecretPath, wire.SecretRequest{Secret: secret, DeviceID: ek.DeviceID}, &sr); err != nil {
		return nil, err
	}
	chain, err := parseChain(sr.Chain)
	if err != nil {
		return nil, fmt.Errorf("enroll: AK certificate: %w", err)
	}
	if !publicKeysEqual(chain[0].PublicKey, ak.Public()) {
		return nil, errors.New("enroll: the AK certificate is not for this AK")
	}
	c.log.Info("AK certified", "device", ek.DeviceID, "not_after", chain[0].NotAfter)
	return &Attestation{DeviceID: ek.DeviceID, AK: ak, Chain: chain}, nil
}

// DeviceCert is a device certificate and its TPM key.
type DeviceCert struct {
	DeviceID string
	Key      crypto.Signer       // in the TPM
	Chain    []*x509.Certificate // device certificate, then intermediates
	close    func() error        // unloads a key made for this certificate
}

// Close unloads the key from the TPM, unless it is a resident key the
// caller loaded (DeviceCertificate's key), which stays loaded.
func (d *DeviceCert) Close() error {
	if d.close == nil {
		return nil
	}
	return d.close()
}

// DeviceCertificate gets a device certificate through ACME
// device-attest-01 for key, which att's AK certifies over the ACME key
// authorization: the certificate is the CA's word that key lives in the
// device's TPM. With a nil key, a new TPM key is made for the certificate
// (and unloaded by Close).
func (c *Client) DeviceCertificate(ctx context.Context, att *Attestation, key *tpm.ResidentKey) (*DeviceCert, error) {
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ac := &acme.Client{Key: accountKey, HTTPClient: c.hc, DirectoryURL: c.caURL + "/acme/" + wire.AttestProvisioner + "/directory"}
	if _, err := ac.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		return nil, fmt.Errorf("enroll: ACME account: %w", err)
	}
	order, err := ac.AuthorizeOrder(ctx, []acme.AuthzID{{Type: "permanent-identifier", Value: att.DeviceID}})
	if err != nil {
		return nil, fmt.Errorf("enroll: ACME order: %w", err)
	}
	if len(order.AuthzURLs) != 1 {
		return nil, fmt.Errorf("enroll: ACME order has %d authorizations, want 1", len(order.AuthzURLs))
	}
	authz, err := ac.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		return nil, fmt.Errorf("enroll: ACME authorization: %w", err)
	}
	var chal *acme.Challenge
	for _, ch := range authz.Challenges {
		if ch.Type == "device-attest-01" {
			chal = ch
		}
	}
	if chal == nil {
		return nil, errors.New("enroll: the CA offered no device-attest-01 challenge")
	}
	keyAuth, err := ac.HTTP01ChallengeResponse(chal.Token) // token "." thumbprint
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256([]byte(keyAuth))
	dc := &DeviceCert{DeviceID: att.DeviceID}
	var cp tpm.Certification
	if key != nil {
		if cp, err = att.AK.Certify(key, digest[:]); err != nil {
			return nil, err
		}
		dc.Key = key
	} else {
		k, err := att.AK.NewKey(digest[:])
		if err != nil {
			return nil, err
		}
		cp, dc.Key, dc.close = k.CertificationParameters(), k, k.Close
	}
	if dc.Chain, err = c.finishOrder(ctx, ac, att, order, authz, chal, dc.Key, cp); err != nil {
		dc.Close()
		return nil, err
	}
	return dc, nil
}

func (c *Client) finishOrder(ctx context.Context, ac *acme.Client, att *Attestation, order *acme.Order, authz *acme.Authorization, chal *acme.Challenge, key crypto.Signer, cp tpm.Certification) ([]*x509.Certificate, error) {
	x5c := make([]any, len(att.Chain))
	for i, crt := range att.Chain {
		x5c[i] = crt.Raw
	}
	attObj, err := cbor.Marshal(map[string]any{
		"fmt": "tpm",
		"attStmt": map[string]any{
			"ver":      "2.0",
			"alg":      int64(-257), // RS256: the AK is RSA
			"x5c":      x5c,
			"sig":      cp.CreateSignature,
			"certInfo": cp.CreateAttestation,
			"pubArea":  cp.Public,
		},
	})
	if err != nil {
		return nil, err
	}
	chal.Payload, err = json.Marshal(map[string]string{"attObj": base64.RawURLEncoding.EncodeToString(attObj)})
	if err != nil {
		return nil, err
	}
	if _, err := ac.Accept(ctx, chal); err != nil {
		return nil, fmt.Errorf("enroll: device-attest-01: %w", err)
	}
	if _, err := ac.WaitAuthorization(ctx, authz.URI); err != nil {
		return nil, fmt.Errorf("enroll: device-attest-01: %w", err)
	}
	if _, err := ac.WaitOrder(ctx, order.URI); err != nil {
		return nil, fmt.Errorf("enroll: ACME order: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: att.DeviceID}}, key)
	if err != nil {
		return nil, fmt.Errorf("enroll: CSR: %w", err)
	}
	ders, _, err := ac.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("enroll: device certificate: %w", err)
	}
	chain, err := parseChain(ders)
	if err != nil {
		return nil, fmt.Errorf("enroll: device certificate: %w", err)
	}
	if !publicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, errors.New("enroll: the device certificate is not for the attested key")
	}
	c.log.Info("device certificate issued", "device", att.DeviceID, "serial", chain[0].SerialNumber, "not_after", chain[0].NotAfter)
	return chain, nil
}

// SSHCertificate asks for an SSH certificate ("host" or "user") for pub,
// authorised by the device certificate. principals are the host's names for
// a host certificate; the CA sets a user certificate's principals itself.
func (c *Client) SSHCertificate(ctx context.Context, dc *DeviceCert, certType string, principals []string, pub ssh.PublicKey) (*ssh.Certificate, error) {
	if certType != "host" && certType != "user" {
		return nil, fmt.Errorf("enroll: certificate type %q: want host or user", certType)
	}
	u, err := hostOf(c.caURL)
	if err != nil {
		return nil, err
	}
	tok, err := X5CToken(dc.Key, dc.Chain, wire.DeviceProvisioner, "https://"+u+"/1.0/ssh/sign", dc.DeviceID,
		map[string]any{"certType": certType, "keyID": dc.DeviceID, "principals": principals}, c.now())
	if err != nil {
		return nil, err
	}
	req := map[string]any{"publicKey": pub.Marshal(), "ott": tok, "certType": certType, "keyID": dc.DeviceID, "principals": principals}
	var resp struct {
		Crt string `json:"crt"`
	}
	if err := c.postJSON(ctx, "/1.0/ssh/sign", req, &resp); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(resp.Crt)
	if err != nil {
		return nil, fmt.Errorf("enroll: SSH certificate: %w", err)
	}
	k, err := ssh.ParsePublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("enroll: SSH certificate: %w", err)
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok || !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) {
		return nil, errors.New("enroll: the CA answered with something other than a certificate for this key")
	}
	c.log.Info("SSH certificate issued", "device", dc.DeviceID, "type", certType, "serial", cert.Serial, "principals", cert.ValidPrincipals)
	return cert, nil
}

// X5CToken is a one-time token for step-ca's X5C provisioner: a JWT signed
// by the certificate's key, carrying the chain in its x5c header and, for
// SSH, the request under "step.ssh".
func X5CToken(signer crypto.Signer, chain []*x509.Certificate, provisioner, audience, subject string, sshOpts map[string]any, now time.Time) (string, error) {
	x5c := make([]string, len(chain))
	for i, crt := range chain {
		x5c[i] = base64.StdEncoding.EncodeToString(crt.Raw)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.NewOpaqueSigner(signer)},
		new(jose.SignerOptions).WithType("JWT").WithHeader("x5c", x5c))
	if err != nil {
		return "", fmt.Errorf("enroll: token signer: %w", err)
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	claims := map[string]any{
		"iss": provisioner, "sub": subject, "aud": audience + "#x5c/" + provisioner,
		"nbf": now.Add(-30 * time.Second).Unix(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti),
	}
	if sshOpts != nil {
		claims["step"] = map[string]any{"ssh": sshOpts}
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("enroll: sign token: %w", err)
	}
	return jws.CompactSerialize()
}

// CAError is a refusal from the CA, with its message.
type CAError struct {
	Path    string
	Status  int
	Message string
}

func (e *CAError) Error() string {
	return fmt.Sprintf("enroll: %s: HTTP %d: %s", e.Path, e.Status, e.Message)
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.caURL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("enroll: %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("enroll: %s: %w", path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"` // step-ca's
		}
		json.Unmarshal(body, &e)
		msg := e.Error + e.Message
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		return &CAError{Path: path, Status: resp.StatusCode, Message: msg}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("enroll: %s: decoding the answer: %w", path, err)
	}
	return nil
}

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	out := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		crt, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out[i] = crt
	}
	return out, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// hostOf returns the host name of a URL, without the port: the audience
// step-ca expects.
func hostOf(caURL string) (string, error) {
	rest, ok := strings.CutPrefix(caURL, "https://")
	if !ok {
		return "", fmt.Errorf("enroll: CA URL %q is not https", caURL)
	}
	host, _, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	return host, nil
}
