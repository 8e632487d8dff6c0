// Package attestca is devid's TPM Attestation CA: it proves that an
// Attestation Key (AK) lives in the same TPM as a registered, active
// device's Endorsement Key (EK), and certifies the AK.
//
// The protocol is the one of go.step.sm/crypto/tpm/attestation, so step's
// TPM tooling can enrol against devid too:
//
//  1. POST /attest with the EK (and EK certificate) and the AK's attestation
//     parameters. The EK is RSA, or ECC on P-256 or P-384 for a TPM whose
//     only EK is an ECC one (package tpm says which EK names a device). The
//     CA checks that the device is registered and active, that the EK
//     certificate chains to a manufacturer root (when roots are
//     configured), and that the AK is a restricted RSA signing key created in
//     a TPM (go-attestation's ActivationParameters). It answers with a
//     one-time secret encrypted to the EK, bound to the AK (credential
//     activation, tpm.MakeCredential: RSA-OAEP to an RSA EK, ECDH with an
//     ECC EK).
//  2. The device decrypts it with TPM2_ActivateCredential, which only the TPM
//     holding both the EK and the AK can do.
//  3. POST /secret with the decrypted secret. The CA finds the pending
//     attestation by the secret's hash, uses it up, checks the device's
//     status again, and issues an AK certificate: empty subject, first
//     extended key usage tcg-kp-AIKCertificate (2.23.133.8.3), and a critical
//     subject alternative name with the TPM's manufacturer, model and
//     version, the device ID as a PermanentIdentifier, and the device ID as a
//     URI — the profile step-ca's ACME device-attest-01 accepts.
//
// A device registered without its EK (pending) presents a one-time
// enrolment token with its first attestation (AttestRequest.Enrolment): the
// CA checks it at step 1 and, at step 3, binds the TPM to the device before
// it checks the device's status (see token.go).
//
// Pending attestations live in the CA's database, so a restart or another
// replica can finish one. They expire (60 s by default), are single-use,
// and a device has at most MaxPendingPerDevice at a time (see pending.go).
//
// Attest and Secret refuse with an *Error, whose kind says what is wrong:
// ErrInvalid for a request that is malformed or inconsistent, ErrRefused
// for a device or secret that is not good enough. The HTTP handler
// (CA.ServeHTTP, mounted at wire.AttestationPath) answers them 400 and 403,
// with the message as {"error": "..."}; anything else is a 500 whose
// detail stays in the CA's log.
package attestca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	"github.com/google/go-attestation/attest"
	"github.com/smallstep/nosql/database"
	"go.step.sm/crypto/x509util"
)

// Devices is the part of the inventory the Attestation CA needs: devices,
// and their owners (inventory.CheckUsable).
type Devices interface {
	Device(ref string) (*inventory.Device, error)
	User(email string) (*inventory.User, error)
	Enrolments
}

// Config configures the Attestation CA.
type Config struct {
	// Cert and Signer are the Attestation CA's certificate and key, which
	// sign AK certificates. Required.
	Cert   *x509.Certificate
	Signer crypto.Signer
	// EKRoots, if not nil, are the TPM manufacturers' roots (with
	// EKIntermediates): a device must then present an EK certificate that
	// chains to them. If nil, EK certificates are not required, and the
	// registered EK alone identifies the device.
	EKRoots, EKIntermediates *x509.CertPool
	// SecretTTL is how long a pending attestation waits for its secret.
	// Default 60 s.
	SecretTTL time.Duration
	// AKCertLifetime is the lifetime of AK certificates, capped at the end
	// of Cert. Default DefaultAKCertLifetime. An AK certificate only vouches
	// that a key lives in a registered device's TPM: it gives no access by
	// itself (the device's status is checked again for every device and SSH
	// certificate), and step's TPM tooling reuses a cached one for every
	// enrolment, so it lasts far longer than the certificates it leads to.
	AKCertLifetime time.Duration
	Now            func() time.Time // default time.Now
	Log            *slog.Logger     // required
	// Observer, if set, hears of every attestation served: for metrics.
	Observer Observer
}

// DefaultAKCertLifetime is the default lifetime of AK certificates: a year.
const DefaultAKCertLifetime = 365 * 24 * time.Hour

// CA is the Attestation CA.
type CA struct {
	cfg     Config
	devices Devices
	db      database.DB
	storing sync.Mutex // storePending
}

var pendingTable = []byte("devid_attest_pending")

// New returns an Attestation CA keeping pending attestations in db.
func New(cfg Config, devices Devices, db database.DB) (*CA, error) {
	if cfg.Cert == nil || cfg.Signer == nil || cfg.Log == nil {
		return nil, errors.New("attestca: Cert, Signer and Log are required")
	}
	if cfg.SecretTTL <= 0 {
		cfg.SecretTTL = 60 * time.Second
	}
	if cfg.AKCertLifetime <= 0 {
		cfg.AKCertLifetime = DefaultAKCertLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, t := range [][]byte{pendingTable, byDeviceTable} {
		if err := db.CreateTable(t); err != nil {
			return nil, fmt.Errorf("attestca: create table %s: %w", t, err)
		}
	}
	return &CA{cfg: cfg, devices: devices, db: db}, nil
}

// The kinds of refusal (errors.Is).
var (
	// ErrInvalid: the request is malformed or inconsistent (an EK
	// certificate for another key, an AK no TPM made, no secret).
	ErrInvalid = errors.New("invalid attestation request")
	// ErrRefused: the request is well formed, but not good enough: a
	// device that is not registered or not active, an EK certificate that
	// does not chain to a manufacturer's root, a secret that is wrong,
	// used or expired.
	ErrRefused = errors.New("attestation refused")
)

// Error is a refusal: its Kind (ErrInvalid or ErrRefused) and the reason
// the device is shown (Msg).
type Error struct {
	Kind error
	Msg  string
	// Reason is the refusal's kind for metrics, one of the Reason
	// constants (observe.go); "" is ReasonInvalid or ReasonRefused by Kind.
	Reason string
}

func (e *Error) Error() string { return "attestca: " + e.Msg }

// Unwrap lets errors.Is match the kind.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func refused(format string, args ...any) *Error {
	return &Error{Kind: ErrRefused, Msg: fmt.Sprintf(format, args...)}
}

// pending is an attestation waiting for its secret.
type pending struct {
	SecretHash []byte    `json:"secretHash"`
	DeviceID   string    `json:"deviceId"`
	AKPublic   []byte    `json:"akPublic"` // TPMT_PUBLIC
	TPM        TPMInfo   `json:"tpm"`
	Expires    time.Time `json:"expires"`
	Used       bool      `json:"used"`
	// Enrolment: the token the attestation presented, to bind the TPM
	// to its pending device once it has proved it holds the EK.
	Enrolment *pendingEnrolment `json:"enrolment,omitempty"`
}

// Attest checks an attestation request and returns the encrypted
// challenge.
func (ca *CA) Attest(req *AttestRequest) (*AttestResponse, error) {
	now := ca.cfg.Now()
	ekPub, err := ca.ekPublic(req)
	if err != nil {
		return nil, err
	}
	id, err := deviceid.FromPublicKey(ekPub)
	if err != nil {
		return nil, invalid("EK: %v", err)
	}
	enrol, bound, err := ca.checkEnrolment(req, id, ekPub)
	if err != nil {
		return nil, err
	}
	if enrol == nil || bound {
		if err := ca.checkDevice(id); err != nil {
			return nil, err
		}
	}
	if req.TPMInfo.Version != 0 && req.TPMInfo.Version != 2 {
		return nil, invalid("device %s: TPM version %d: only TPM 2.0 is supported", id, req.TPMInfo.Version)
	}
	if err := checkAKEncoding(&req.AttestParams); err != nil {
		return nil, invalid("device %s: %v", id, err)
	}
	akPub, err := attest.ParseAKPublic(req.AttestParams.Public)
	if err != nil {
		return nil, invalid("device %s: AK public area: %v", id, err)
	}
	if _, ok := akPub.Public.(*rsa.PublicKey); !ok {
		return nil, invalid("device %s: the AK is a %T: devid needs an RSA AK (step-ca's device-attest-01 verifies only RSA AKs)", id, akPub.Public)
	}
	secret, ec, err := tpm.MakeCredential(ekPub, attest.AttestationParameters{
		Public:                  req.AttestParams.Public,
		UseTCSDActivationFormat: req.AttestParams.UseTCSDActivationFormat,
		CreateData:              req.AttestParams.CreateData,
		CreateAttestation:       req.AttestParams.CreateAttestation,
		CreateSignature:         req.AttestParams.CreateSignature,
	})
	if err != nil {
		return nil, invalid("device %s: AK parameters: %v", id, err)
	}
	sum := sha256.Sum256(secret)
	rec := pending{SecretHash: sum[:], DeviceID: id, AKPublic: req.AttestParams.Public, TPM: req.TPMInfo, Expires: now.Add(ca.cfg.SecretTTL), Enrolment: enrol}
	if err := ca.storePending(rec, now); err != nil {
		return nil, err
	}
	ca.cfg.Log.Info("attestation challenge issued", "device", id, "expires", rec.Expires)
	return &AttestResponse{Credential: ec.Credential, Secret: ec.Secret}, nil
}

// ekPublic takes the EK from the request, checks it against the EK
// certificate, and the certificate against the manufacturer roots.
func (ca *CA) ekPublic(req *AttestRequest) (crypto.PublicKey, error) {
	var ekPub crypto.PublicKey
	if len(req.EKPub) > 0 {
		ek, err := deviceid.ParseEK(req.EKPub)
		if err != nil {
			return nil, invalid("EK: %v", err)
		}
		ekPub = ek.Public
	}
	var ekCert *x509.Certificate
	if len(req.EKCerts) > 0 {
		c, err := x509.ParseCertificate(req.EKCerts[0])
		if err != nil {
			return nil, invalid("EK certificate: %v", err)
		}
		ekCert = c
		if ekPub == nil {
			ekPub = c.PublicKey
		} else if !publicKeysEqual(ekPub, c.PublicKey) {
			return nil, invalid("the EK certificate is not for the EK sent")
		}
	}
	if ekPub == nil {
		return nil, invalid("no EK: send the EK public key or its certificate")
	}
	if ca.cfg.EKRoots != nil {
		if ekCert == nil {
			return nil, withReason(ReasonEKCertificate, refused("an EK certificate is required (manufacturer roots are configured)"))
		}
		inter := x509.NewCertPool()
		if ca.cfg.EKIntermediates != nil {
			inter = ca.cfg.EKIntermediates.Clone()
		}
		for _, der := range req.EKCerts[1:] {
			if c, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := tpm.VerifyEKCertificate(ekCert, x509.VerifyOptions{Roots: ca.cfg.EKRoots, Intermediates: inter, CurrentTime: ca.cfg.Now()}); err != nil {
			return nil, withReason(ReasonEKCertificate, refused("EK certificate does not chain to a configured manufacturer root: %v", err))
		}
	}
	return ekPub, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// checkDevice refuses unknown, quarantined and retired devices, and those
// whose owner is disabled (inventory.CheckUsable).
func (ca *CA) checkDevice(id string) error {
	_, err := inventory.CheckUsable(ca.devices, id)
	var nu *inventory.NotUsableError
	switch {
	case errors.As(err, &nu):
		return &Error{Kind: ErrRefused, Msg: nu.Error(), Reason: nu.Reason()}
	case err != nil:
		return fmt.Errorf("attestca: inventory: %w", err)
	}
	return nil
}

// Secret finishes an attestation: it uses up the pending attestation the
// secret belongs to and returns the AK certificate chain.
func (ca *CA) Secret(req *SecretRequest) (*SecretResponse, error) {
	now := ca.cfg.Now()
	if len(req.Secret) == 0 {
		return nil, invalid("no secret")
	}
	sum := sha256.Sum256(req.Secret)
	old, err := ca.db.Get(pendingTable, sum[:])
	if database.IsErrNotFound(err) {
		return nil, withReason(ReasonSecret, refused("wrong secret, or its attestation expired: start again with /attest"))
	}
	if err != nil {
		return nil, fmt.Errorf("attestca: read pending attestation: %w", err)
	}
	var rec pending
	if err := json.Unmarshal(old, &rec); err != nil {
		return nil, fmt.Errorf("attestca: decode pending attestation: %w", err)
	}
	if subtle.ConstantTimeCompare(rec.SecretHash, sum[:]) != 1 {
		return nil, withReason(ReasonSecret, refused("wrong secret"))
	}
	switch {
	case rec.Used:
		return nil, withReason(ReasonSecret, refused("device %s: this secret was already used: start again with /attest", rec.DeviceID))
	case !now.Before(rec.Expires):
		ca.db.Del(pendingTable, sum[:])
		return nil, withReason(ReasonSecret, refused("device %s: the attestation expired at %s: start again with /attest", rec.DeviceID, rec.Expires.Format(time.RFC3339)))
	case req.DeviceID != "" && req.DeviceID != rec.DeviceID:
		return nil, withReason(ReasonSecret, refused("this secret belongs to another device's attestation, not %s's", req.DeviceID))
	}
	used := rec
	used.Used = true
	nb, _ := json.Marshal(used)
	if _, swapped, err := ca.db.CmpAndSwap(pendingTable, sum[:], old, nb); err != nil {
		return nil, fmt.Errorf("attestca: use pending attestation: %w", err)
	} else if !swapped {
		return nil, withReason(ReasonSecret, refused("device %s: this secret was already used: start again with /attest", rec.DeviceID))
	}
	if err := ca.bindEnrolment(&rec); err != nil {
		return nil, err
	}
	if err := ca.checkDevice(rec.DeviceID); err != nil {
		return nil, err
	}
	akPub, err := attest.ParseAKPublic(rec.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("attestca: stored AK: %w", err)
	}
	der, err := ca.akCertificate(rec, akPub.Public, now)
	if err != nil {
		return nil, err
	}
	ca.recordAttestation(&rec)
	ca.cfg.Log.Info("AK certified", "device", rec.DeviceID)
	return &SecretResponse{Chain: [][]byte{der, ca.cfg.Cert.Raw}}, nil
}

// TCG OIDs.
var (
	oidTCGKpAIKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	oidTPMManufacturer     = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel            = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion          = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidSubjectAltName      = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// akCertificate issues the AK certificate in the profile step-ca checks.
func (ca *CA) akCertificate(rec pending, akPub crypto.PublicKey, now time.Time) ([]byte, error) {
	san, err := akSAN(rec)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ca.cfg.AKCertLifetime)
	if notAfter.After(ca.cfg.Cert.NotAfter) {
		notAfter = ca.cfg.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidTCGKpAIKCertificate},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cfg.Cert, akPub, ca.cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("attestca: sign AK certificate: %w", err)
	}
	return der, nil
}

// akSAN is the subject alternative name of an AK certificate: the TPM's
// manufacturer, model and version (directoryName), the device ID as a
// PermanentIdentifier and as a URI.
func akSAN(rec pending) ([]byte, error) {
	manufacturer := "id:00000000"
	if n, err := strconv.ParseUint(rec.TPM.Manufacturer, 10, 32); err == nil {
		manufacturer = fmt.Sprintf("id:%08X", n)
	}
	model := strings.TrimSpace(rec.TPM.Model)
	if model == "" {
		model = "unknown"
	}
	version := rec.TPM.FirmwareVersion
	if version == "" {
		version = "unknown"
	}
	dn, err := json.Marshal(x509util.Name{ExtraNames: []x509util.DistinguishedName{
		{Type: x509util.ObjectIdentifier(oidTPMManufacturer), Value: manufacturer},
		{Type: x509util.ObjectIdentifier(oidTPMModel), Value: model},
		{Type: x509util.ObjectIdentifier(oidTPMVersion), Value: version},
	}})
	if err != nil {
		return nil, err
	}
	var names []asn1.RawValue
	for _, s := range []x509util.SubjectAlternativeName{
		{Type: x509util.DirectoryNameType, ASN1Value: dn},
		{Type: x509util.PermanentIdentifierType, Value: rec.DeviceID},
		{Type: x509util.URIType, Value: rec.DeviceID},
	} {
		rv, err := s.RawValue()
		if err != nil {
			return nil, fmt.Errorf("attestca: AK certificate SAN %s: %w", s.Type, err)
		}
		names = append(names, rv)
	}
	return asn1.Marshal(names)
}
