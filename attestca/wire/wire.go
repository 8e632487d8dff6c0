// Package wire is what both sides of enrolment agree on: the CA (packages
// caserver and attestca) and devices (package enroll). It imports nothing.
//
// It holds the names devid-ca serves under (the Attestation CA's paths,
// the step-ca provisioners), and the Attestation CA's wire format, that of
// go.step.sm/crypto/tpm/attestation's Client, so that step's own TPM
// tooling can enrol against devid. Byte fields are standard base64 in JSON.
package wire

// Where devid-ca serves the Attestation CA: POST AttestPath, then
// SecretPath (the steps are package attestca's).
const (
	AttestationPath = "/attestation"
	AttestPath      = AttestationPath + "/attest"
	SecretPath      = AttestationPath + "/secret"
)

// The step-ca provisioners devid-ca configures, by name.
const (
	// AttestProvisioner (ACME, device-attest-01, format tpm) issues device
	// certificates to TPM-attested devices: its directory is
	// /acme/AttestProvisioner/directory.
	AttestProvisioner = "devid-tpm"
	// DeviceProvisioner (X5C) is how a device, holding its device
	// certificate, asks for SSH certificates.
	DeviceProvisioner = "devid-devices"
)

// TPMInfo describes the TPM.
type TPMInfo struct {
	Version         int    `json:"version,omitempty"`      // 2 for TPM 2.0
	Manufacturer    string `json:"manufacturer,omitempty"` // TPM_PT_MANUFACTURER, decimal
	Model           string `json:"model,omitempty"`        // vendor string
	FirmwareVersion string `json:"firmwareVersion,omitempty"`
}

// AttestationParameters are go-attestation's AK attestation parameters.
type AttestationParameters struct {
	Public                  []byte `json:"public,omitempty"` // TPMT_PUBLIC of the AK
	UseTCSDActivationFormat bool   `json:"useTCSDActivationFormat,omitempty"`
	CreateData              []byte `json:"createData,omitempty"`
	CreateAttestation       []byte `json:"createAttestation,omitempty"`
	CreateSignature         []byte `json:"createSignature,omitempty"`
}

// AttestRequest is the body of POST /attest.
type AttestRequest struct {
	TPMInfo      TPMInfo               `json:"tpmInfo"`
	EKPub        []byte                `json:"ek,omitempty"`      // PKIX DER
	EKCerts      [][]byte              `json:"ekCerts,omitempty"` // DER
	AKCert       []byte                `json:"akCert,omitempty"`  // sent by some clients; ignored
	AttestParams AttestationParameters `json:"params"`
	// Enrolment, optional (devid's clients send it when given a token;
	// step's never do): the one-time token that binds this TPM to a
	// device registered without its EK, at its first attestation.
	Enrolment *Enrolment `json:"enrolment,omitempty"`
}

// Enrolment is a one-time enrolment token (package enroltoken's format),
// and what the device presenting it says it is: the CA refuses a token
// issued for a device of another kind or name.
type Enrolment struct {
	Token string `json:"token"`          // devid-enrol-…
	Kind  string `json:"kind,omitempty"` // "host" or "workstation"; empty claims nothing
	Name  string `json:"name,omitempty"` // the device's name in the inventory; empty claims nothing
}

// AttestResponse is the credential activation challenge, encrypted to the
// EK.
type AttestResponse struct {
	Credential []byte `json:"credential"`
	Secret     []byte `json:"secret"`
}

// SecretRequest is the body of POST /secret: the decrypted secret.
type SecretRequest struct {
	Secret []byte `json:"secret"`
	// DeviceID, optional (devid's client sends it; step's does not): the
	// device the caller is finishing an attestation for. A secret that
	// belongs to another device's attestation is then refused without being
	// used up.
	DeviceID string `json:"deviceId,omitempty"`
}

// SecretResponse carries the AK certificate and its chain, DER.
type SecretResponse struct {
	Chain [][]byte `json:"chain"`
}
