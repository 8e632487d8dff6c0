// Package issuance decides, at the moment step-ca is about to sign, whether
// a device may have a certificate and what the certificate says.
//
// It answers step-ca's own webhooks, called in process (see InProcess), so the
// decision is made inside step-ca's signing path and cannot be skipped:
//
//   - SSH (ENRICHING, on the X5C provisioner devices use): the device
//     certificate that authorised the request names the device (its
//     PermanentIdentifier); the device must be registered and active, a host
//     may only get host certificates and a workstation only user
//     certificates. The answer gives the certificate's key ID (the device ID)
//     and principals: for a host, the names it asked for; for a workstation,
//     the device ID, user:<email>, login:<login> and group:<g> for its owner,
//     and collection:<c> — taken from the inventory, never from the request.
//   - Device certificates (AUTHORIZING, on the ACME device-attest-01
//     provisioner): the attested permanent identifier must be a registered,
//     active device.
//   - Anything else the device provisioner is asked for (an X.509
//     certificate through X5C): refused.
//
// Status is read from the inventory at every call: a quarantine takes
// effect on the very next issuance.
package issuance

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/certificates/webhook"
	"go.step.sm/crypto/x509util"
)

// Inventory is what issuance reads.
type Inventory interface {
	Device(ref string) (*inventory.Device, error)
	User(email string) (*inventory.User, error)
}

// Paths of the webhooks, below Base.
const (
	Base       = "https://devid-ca.invalid/webhook/"
	PathSSH    = "ssh"
	PathDevice = "device"
	PathDeny   = "deny"
)

// Policy answers step-ca's webhooks.
type Policy struct {
	inv    Inventory
	secret []byte // HMAC key step-ca signs webhook requests with
	log    *slog.Logger
}

// New returns a Policy. secret is the webhook secret configured on the
// provisioners (raw bytes).
func New(inv Inventory, secret []byte, log *slog.Logger) *Policy {
	return &Policy{inv: inv, secret: secret, log: log}
}

// SSHData is what the SSH webhook gives the certificate template.
type SSHData struct {
	KeyID      string   `json:"keyId"`
	Principals []string `json:"principals"`
}

// Denied is a refusal with the reason the requester is shown.
type Denied struct{ Msg string }

func (e *Denied) Error() string { return e.Msg }

func deny(format string, args ...any) error { return &Denied{Msg: fmt.Sprintf(format, args...)} }

// ServeHTTP answers a webhook request from step-ca.
func (p *Policy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	mac := hmac.New(sha256.New, p.secret)
	mac.Write(body)
	got, _ := hex.DecodeString(r.Header.Get("X-Smallstep-Signature"))
	if !hmac.Equal(got, mac.Sum(nil)) {
		http.Error(w, "bad webhook signature", http.StatusUnauthorized)
		return
	}
	var req webhook.RequestBody
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var data any
	switch r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:] {
	case PathSSH:
		data, err = p.SSH(&req)
	case PathDevice:
		err = p.DeviceCertificate(&req)
	default:
		err = deny("the device provisioner issues SSH certificates only")
	}
	resp := webhook.ResponseBody{Allow: err == nil, Data: data}
	var d *Denied
	switch {
	case err == nil:
	case errors.As(err, &d):
		resp.Error = &webhook.Error{Code: "forbidden", Message: d.Msg}
		p.log.Warn("issuance refused", "webhook", r.URL.Path, "reason", d.Msg)
	default:
		p.log.Error("issuance check failed", "webhook", r.URL.Path, "err", err)
		resp.Error = &webhook.Error{Code: "internal", Message: "devid-ca could not check the device; see its log"}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// activeDevice returns the active device with this ID, or why not
// (inventory.CheckUsable).
func (p *Policy) activeDevice(id string) (*inventory.Device, error) {
	if !deviceid.Valid(id) {
		return nil, deny("%q is not a device ID", id)
	}
	d, err := inventory.CheckUsable(p.inv, id)
	var nu *inventory.NotUsableError
	if errors.As(err, &nu) {
		return nil, &Denied{Msg: nu.Error()}
	}
	return d, err
}

// SSH decides an SSH certificate request made with a device certificate.
func (p *Policy) SSH(req *webhook.RequestBody) (*SSHData, error) {
	if req.X5CCertificate == nil || req.SSHCertificateRequest == nil {
		return nil, deny("an SSH certificate needs a device certificate")
	}
	cert, err := x509.ParseCertificate(req.X5CCertificate.Raw)
	if err != nil {
		return nil, deny("device certificate: %v", err)
	}
	id, err := DeviceIDOf(cert)
	if err != nil {
		return nil, err
	}
	d, err := p.activeDevice(id)
	if err != nil {
		return nil, err
	}
	sr := req.SSHCertificateRequest
	switch {
	case sr.Type == "host" && d.Kind == inventory.KindHost:
		if len(sr.Principals) == 0 {
			return nil, deny("device %s: a host certificate needs at least one principal (a host name or address)", d.Name)
		}
		for _, pr := range sr.Principals {
			if pr == "" || strings.ContainsAny(pr, " \t\r\n,*?") {
				return nil, deny("device %s: host principal %q is not a host name or address", d.Name, pr)
			}
		}
		p.log.Info("SSH host certificate allowed", "device", id, "name", d.Name, "principals", sr.Principals)
		return &SSHData{KeyID: id, Principals: sr.Principals}, nil
	case sr.Type == "user" && d.Kind == inventory.KindWorkstation:
		pr, err := p.userPrincipals(d)
		if err != nil {
			return nil, err
		}
		p.log.Info("SSH user certificate allowed", "device", id, "name", d.Name, "principals", pr)
		return &SSHData{KeyID: id, Principals: pr}, nil
	}
	return nil, deny("device %s is a %s: it may not have an SSH %s certificate", d.Name, d.Kind, sr.Type)
}

// userPrincipals are the principals of a workstation's user certificates.
func (p *Policy) userPrincipals(d *inventory.Device) ([]string, error) {
	pr := []string{d.ID}
	if d.Owner != "" {
		u, err := p.inv.User(d.Owner)
		if err != nil {
			return nil, fmt.Errorf("owner %s of device %s: %w", d.Owner, d.Name, err)
		}
		pr = append(pr, "user:"+u.Email, "login:"+u.Login)
		for _, g := range u.Groups {
			pr = append(pr, "group:"+g)
		}
	}
	if d.Collection != "" {
		pr = append(pr, "collection:"+d.Collection)
	}
	return pr, nil
}

// DeviceCertificate decides a device certificate after device-attest-01.
func (p *Policy) DeviceCertificate(req *webhook.RequestBody) error {
	if req.AttestationData == nil || req.AttestationData.PermanentIdentifier == "" {
		return deny("a device certificate needs a TPM attestation (device-attest-01)")
	}
	d, err := p.activeDevice(req.AttestationData.PermanentIdentifier)
	if err != nil {
		return err
	}
	p.log.Info("device certificate allowed", "device", d.ID, "name", d.Name)
	return nil
}

// DeviceIDOf returns the device ID a device certificate names: its one
// PermanentIdentifier.
func DeviceIDOf(cert *x509.Certificate) (string, error) {
	sans, err := x509util.ParseSubjectAlternativeNames(cert)
	if err != nil {
		return "", deny("device certificate: %v", err)
	}
	var ids []string
	for _, pi := range sans.PermanentIdentifiers {
		ids = append(ids, pi.Identifier)
	}
	if len(ids) != 1 || !deviceid.Valid(ids[0]) {
		return "", deny("the certificate does not name exactly one device (permanent identifiers: %q)", ids)
	}
	return ids[0], nil
}

// InProcess is the HTTP client step-ca calls webhooks with
// (authority.WithWebhookClient): it delivers each call to Handler in
// process, never over a socket, so there is nothing for anyone else to
// reach. It serves only devid's webhook URLs, below Base.
type InProcess struct{ Handler http.Handler }

// Do implements step-ca's provisioner.HTTPClient.
func (c InProcess) Do(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.String(), Base) {
		return nil, fmt.Errorf("issuance: webhook URL %s is not devid's", req.URL)
	}
	rec := httptest.NewRecorder()
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	c.Handler.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// Get implements step-ca's provisioner.HTTPClient; only devid's webhook
// URLs are served.
func (c InProcess) Get(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}
