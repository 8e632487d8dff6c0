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
//     certificates. The key to sign must be TPM-resident: the device
//     certificate's own key (see below), unless the device's collection
//     allows file keys (inventory.Collection.AllowFileKeys). The answer
//     gives the certificate's key ID (the device ID) and principals: for a
//     host, the names it asked for if the inventory allows each (package
//     hostnames; none asked: the inventory's literal names); for a
//     workstation, the device ID, user:<email>, login:<login> and
//     group:<g> for its owner, collection:<c>, and PrincipalTPM for a
//     TPM-resident key — taken from the inventory, never from the request.
//   - Device certificates (AUTHORIZING, on the ACME device-attest-01
//     provisioner): the attested permanent identifier must be a registered,
//     active device.
//   - Anything else the device provisioner is asked for (an X.509
//     certificate through X5C): refused.
//
// Status is read from the inventory at every call, and so is the device's
// owner (inventory.CheckUsable): a quarantine, or the owner disabled,
// takes effect on the very next issuance.
//
// # Keys that cannot leave the machine
//
// devid signs an SSH certificate only for a key that lives in the device's
// TPM and cannot be taken out of it. The proof has three links:
//
//  1. The device certificate's key was created in the TPM and certified by
//     the device's AK (itself certified by devid's Attestation CA after
//     TPM2_ActivateCredential with the registered EK) over the SHA-256 of
//     the fresh ACME key authorization of a device-attest-01 challenge:
//     step-ca checks the AK chain, the certification signature, that the
//     certified name is the key's, and the key authorization, so the
//     certified key is the one in this very enrolment, not an old one.
//  2. The certified key's TPM object attributes say it cannot leave the
//     TPM: fixedTPM, fixedParent, sensitiveDataOrigin (the TPM made it; it
//     was not imported), sign, not restricted. devid-ca checks them itself
//     on the challenge before step-ca sees it (package issuance/tpmkey),
//     so that the rule does not hang on what a step-ca or go-attestation
//     version happens to check.
//  3. Here: the SSH certificate's public key must be that device
//     certificate's key (compared in SSH wire format). The device signs
//     the request's token with that key, and step-ca verifies it.
//
// A user certificate of such a key carries the principal PrincipalTPM, so
// that a host's principals policy can require it. During a migration, a
// collection may allow file keys: they are signed, without PrincipalTPM,
// and each issuance logs which way it went (key=tpm or key=file).
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
	"slices"
	"strings"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/hostnames"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/certificates/webhook"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
)

// Inventory is what issuance reads.
type Inventory interface {
	Device(ref string) (*inventory.Device, error)
	User(email string) (*inventory.User, error)
	// CollectionOrDefault returns a collection, or its defaults when it
	// has no record.
	CollectionOrDefault(name string) (*inventory.Collection, error)
}

// PrincipalTPM is in every user certificate of a TPM-resident key, and in
// no other certificate: a host's principals policy can require it (e.g.
// "* login:{account} key:tpm").
const PrincipalTPM = "key:tpm"

// NotTPMResident starts the refusal of a key that is not TPM-resident.
const NotTPMResident = "key is not TPM-resident: "

// Paths of the webhooks, below Base.
const (
	Base       = "https://devid-ca.invalid/webhook/"
	PathSSH    = "ssh"
	PathDevice = "device"
	PathDeny   = "deny"
)

// Policy answers step-ca's webhooks.
type Policy struct {
	inv      Inventory
	secret   []byte // HMAC key step-ca signs webhook requests with
	log      *slog.Logger
	observer Observer // nil: none (see Observe)
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

// Denied is a refusal with the reason the requester is shown (Msg) and its
// kind, one of the Reason constants (reasons.go), for metrics.
type Denied struct {
	Msg    string
	Reason string
}

func (e *Denied) Error() string { return e.Msg }

func deny(reason, format string, args ...any) error {
	return &Denied{Msg: fmt.Sprintf(format, args...), Reason: reason}
}

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
		err = deny(ReasonX509NotAllowed, "the device provisioner issues SSH certificates only")
	}
	resp := webhook.ResponseBody{Allow: err == nil, Data: data}
	var d *Denied
	switch {
	case err == nil:
	case errors.As(err, &d):
		resp.Error = &webhook.Error{Code: "forbidden", Message: d.Msg}
		p.log.Warn("issuance refused", "webhook", r.URL.Path, "reason", d.Msg)
		p.refused(r.URL.Path, &req, d.Reason)
	default:
		p.log.Error("issuance check failed", "webhook", r.URL.Path, "err", err)
		resp.Error = &webhook.Error{Code: "internal", Message: "devid-ca could not check the device; see its log"}
		p.refused(r.URL.Path, &req, ReasonError)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// activeDevice returns the active device with this ID, or why not
// (inventory.CheckUsable).
func (p *Policy) activeDevice(id string) (*inventory.Device, error) {
	if !deviceid.Valid(id) {
		return nil, deny(ReasonBadDeviceCertificate, "%q is not a device ID", id)
	}
	d, err := inventory.CheckUsable(p.inv, id)
	var nu *inventory.NotUsableError
	if errors.As(err, &nu) {
		return nil, &Denied{Msg: nu.Error(), Reason: nu.Reason()}
	}
	return d, err
}

// SSH decides an SSH certificate request made with a device certificate.
func (p *Policy) SSH(req *webhook.RequestBody) (*SSHData, error) {
	if req.X5CCertificate == nil || req.SSHCertificateRequest == nil {
		return nil, deny(ReasonNoDeviceCertificate, "an SSH certificate needs a device certificate")
	}
	cert, err := x509.ParseCertificate(req.X5CCertificate.Raw)
	if err != nil {
		return nil, deny(ReasonBadDeviceCertificate, "device certificate: %v", err)
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
	case sr.Type == "host" && d.Kind == inventory.KindHost, sr.Type == "user" && d.Kind == inventory.KindWorkstation:
	default:
		return nil, deny(ReasonWrongKind, "device %s is a %s: it may not have an SSH %s certificate", d.Name, d.Kind, sr.Type)
	}
	coll := inventory.DefaultCollection("")
	if d.Collection != "" {
		if coll, err = p.inv.CollectionOrDefault(d.Collection); err != nil {
			return nil, fmt.Errorf("collection %s of device %s: %w", d.Collection, d.Name, err)
		}
	}
	tpmKey, why := deviceKey(cert, sr.PublicKey)
	keyWay := "tpm"
	if !tpmKey {
		if !coll.AllowFileKeys {
			where := fmt.Sprintf("collection %s does not allow file keys", coll.Name)
			if coll.Name == "" {
				where = fmt.Sprintf("device %s is in no collection, and only a collection may allow file keys", d.Name)
			}
			return nil, deny(ReasonFileKey, "%s%s; only keys that live in the device's TPM are signed (%s)", NotTPMResident, why, where)
		}
		keyWay = "file"
	}
	if sr.Type == "host" {
		pr, err := hostPrincipals(d, coll, sr.Principals)
		if err != nil {
			return nil, err
		}
		if err := checkPrincipals(d, "host", pr); err != nil {
			return nil, err
		}
		p.log.Info("SSH host certificate allowed", "device", id, "name", d.Name, "principals", pr, "key", keyWay, "collection", d.Collection)
		return &SSHData{KeyID: id, Principals: pr}, nil
	}
	pr, err := p.userPrincipals(d)
	if err != nil {
		return nil, err
	}
	if tpmKey {
		pr = append(pr, PrincipalTPM)
	}
	if err := checkPrincipals(d, "user", pr); err != nil {
		return nil, err
	}
	p.log.Info("SSH user certificate allowed", "device", id, "name", d.Name, "principals", pr, "key", keyWay, "collection", d.Collection)
	return &SSHData{KeyID: id, Principals: pr}, nil
}

// checkPrincipals refuses an SSH certificate with no principals, or with
// an empty one: the last check before step-ca signs, whatever decided
// them. OpenSSH before 10.3 takes a host certificate without principals as
// valid for every host name, and a user certificate without them as valid
// for every account an authorized_keys cert-authority line without
// principals= lets in (both seen with 9.2); 10.3 matches such a
// certificate to nothing.
func checkPrincipals(d *inventory.Device, certType string, pr []string) error {
	if len(pr) == 0 || slices.Contains(pr, "") {
		return deny(ReasonNoPrincipals, "device %s: refusing an SSH %s certificate with no principals or an empty one (%q): "+
			"OpenSSH before 10.3 would take it as valid for any name", d.Name, certType, pr)
	}
	return nil
}

// deviceKey reports whether sshKey (SSH wire format) is the device
// certificate's own key, and if not, why.
func deviceKey(cert *x509.Certificate, sshKey []byte) (bool, string) {
	pub, err := ssh.NewPublicKey(cert.PublicKey)
	if err != nil {
		return false, fmt.Sprintf("the device certificate's key (%T) has no SSH form", cert.PublicKey)
	}
	if len(sshKey) == 0 {
		return false, "the request has no SSH public key"
	}
	if !bytes.Equal(pub.Marshal(), sshKey) {
		return false, "the SSH public key is not the device certificate's TPM key"
	}
	return true, ""
}

// hostPrincipals are a host certificate's principals: those asked for, if
// the inventory allows each (the device's Name if it is a host name, its
// HostNames, its collection's), else the inventory's literal names.
func hostPrincipals(d *inventory.Device, coll *inventory.Collection, asked []string) ([]string, error) {
	var allowed []hostnames.Entry
	var texts []string
	add := func(s string) {
		if e, err := hostnames.Parse(s); err == nil && !slices.Contains(texts, s) {
			allowed = append(allowed, e)
			texts = append(texts, s)
		}
	}
	if hostnames.Valid(d.Name) {
		add(d.Name)
	}
	for _, s := range d.HostNames {
		add(s)
	}
	if len(asked) == 0 {
		var out []string
		for _, e := range allowed {
			if e.Literal() {
				out = append(out, e.String())
			}
		}
		if len(out) == 0 {
			return nil, deny(ReasonHostName, "device %s: the request names no host names and the inventory has none to give (its name is not a host name and it has no exact host names): "+
				"give the device host names (devid device add --host-names, or an import's hostnames column), or ask for names its collection allows", d.Name)
		}
		return out, nil
	}
	for _, s := range coll.HostNames {
		add(s)
	}
	for _, pr := range asked {
		if !slices.ContainsFunc(allowed, func(e hostnames.Entry) bool { return e.Allows(pr) }) {
			list := strings.Join(texts, ", ")
			if list == "" {
				list = "none"
			}
			return nil, deny(ReasonHostName, "device %s: host name %q is not allowed (allowed: %s)", d.Name, pr, list)
		}
	}
	return asked, nil
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
		return deny(ReasonNoDeviceCertificate, "a device certificate needs a TPM attestation (device-attest-01)")
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
		return "", deny(ReasonBadDeviceCertificate, "device certificate: %v", err)
	}
	var ids []string
	for _, pi := range sans.PermanentIdentifiers {
		ids = append(ids, pi.Identifier)
	}
	if len(ids) != 1 || !deviceid.Valid(ids[0]) {
		return "", deny(ReasonBadDeviceCertificate, "the certificate does not name exactly one device (permanent identifiers: %q)", ids)
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
