package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/internal/atomicfile"
	keyfile "github.com/foxboron/go-tpm-keyfiles"
	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ResidentKey is an ECDSA P-256 key that lives in this TPM: created by it
// (sensitiveDataOrigin), never exportable (fixedTPM) nor movable under
// another parent (fixedParent). On disk it exists only as a key file: the
// key's public area and its private area encrypted by the TPM's storage
// root key, in the TSS2 PRIVATE KEY format of go-tpm-keyfiles, which
// ssh-tpm-agent and tpm2-openssl read too. The storage root key is the one
// the TCG provisioning guidance derives from the owner seed (ECC P-256, the
// "H-2" template): the same in every program that follows it, and in no
// other TPM. A key file is therefore useless anywhere but in the TPM that
// made it.
//
// A ResidentKey stays loaded until Close; it is a crypto.Signer whose
// signatures are made in the TPM. An AK can certify it again and again
// (AK.Certify), which is how a CA learns it is resident.
type ResidentKey struct {
	t      *TPM
	closed bool // under t's mutex
	handle tpm2.AuthHandle
	public tpm2.TPM2BPublic
	pub    *ecdsa.PublicKey
}

// tpmCloser is the channel as go-tpm's tpm2 API (and go-tpm-keyfiles)
// take it: Close does nothing (the TPM owns the channel), and a command
// the TPM asks to be sent again (TPM_RC_RETRY, TPM_RC_YIELDED,
// TPM_RC_TESTING) is sent again, as go-tpm's legacy API does.
type tpmCloser struct{ ch *Channel }

func (tpmCloser) Close() error { return nil }

// Response codes asking for the command again (TPM 2.0 Part 2, 6.6.3).
const (
	rcYielded = 0x908
	rcTesting = 0x90a
	rcRetry   = 0x922
)

func (c tpmCloser) Send(cmd []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		rsp, err := c.ch.Send(cmd)
		if err != nil || len(rsp) < 10 || attempt == 100 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcYielded, rcTesting, rcRetry:
			time.Sleep(time.Millisecond)
			continue
		}
		return rsp, nil
	}
}

// ownerAuth is the owner hierarchy's authorisation value: empty, as a TPM
// comes from the factory and as Linux distributions leave it.
var ownerAuth []byte

// CreateResidentKey creates a new ECDSA P-256 signing key in the TPM and
// returns its key file (PEM). The key is not loaded: LoadResidentKey it.
func (t *TPM) CreateResidentKey(description string) ([]byte, error) {
	return callRaw(t, "creating resident key", func(tr transport.TPMCloser) ([]byte, error) {
		k, err := keyfile.NewLoadableKey(tr, tpm2.TPMAlgECC, 256, ownerAuth, keyfile.WithDescription(description))
		if err != nil {
			return nil, err
		}
		return k.Bytes(), nil
	})
}

// LoadResidentKey loads a key file made by CreateResidentKey (or by any
// program writing TSS2 loadable ECDSA P-256 keys under the owner
// hierarchy's storage root key, such as ssh-tpm-keygen). It fails if the
// key file was made by another TPM. Keys that could leave a TPM
// (importable keys, or keys without fixedTPM, fixedParent and
// sensitiveDataOrigin) are refused.
func (t *TPM) LoadResidentKey(pemBytes []byte) (*ResidentKey, error) {
	kf, err := keyfile.Decode(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("tpm: key file: %w", err)
	}
	if !kf.Keytype.Equal(keyfile.OIDLoadableKey) {
		return nil, errors.New("tpm: key file: not a loadable TPM key (importable and sealed keys are not resident keys)")
	}
	if kf.HasAuth() {
		return nil, errors.New("tpm: key file: the key needs a password; devid uses keys without one")
	}
	pubArea, err := kf.Pubkey.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: key file: public area: %w", err)
	}
	if err := checkResident(pubArea); err != nil {
		return nil, fmt.Errorf("tpm: key file: %w", err)
	}
	cpub, err := kf.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("tpm: key file: public key: %w", err)
	}
	pub, ok := cpub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("tpm: key file: %T key, want ECDSA P-256", cpub)
	}
	return callRaw(t, "loading resident key", func(tr transport.TPMCloser) (*ResidentKey, error) {
		sess := keyfile.NewTPMSession(tr)
		h, parent, err := keyfile.LoadKey(sess, kf, ownerAuth)
		if parent != nil {
			flush(tr, parent.Handle)
		}
		if err != nil {
			return nil, fmt.Errorf("%w (was this key file made by another TPM?)", err)
		}
		return &ResidentKey{t: t, handle: *h, public: kf.Pubkey, pub: pub}, nil
	})
}

// LoadOrCreateKeyFile loads the key file at path, or, if there is none,
// makes a new resident key and writes its key file (mode 0600, whole).
// created says which. A key file that does not load (another TPM's, or
// damaged) is an error, never replaced: a person decides.
func (t *TPM) LoadOrCreateKeyFile(path, description string) (key *ResidentKey, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if b, err = t.CreateResidentKey(description); err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return nil, false, err
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("tpm: key file: %w", err)
	}
	if key, err = t.LoadResidentKey(b); err != nil {
		return nil, false, fmt.Errorf("%s: %w (move it away to make a new key; certificates for the old one are then useless)", path, err)
	}
	return key, created, nil
}

// checkResident refuses a public area whose key could exist outside the
// TPM, or that is not an unrestricted ECDSA P-256 signing key.
func checkResident(p *tpm2.TPMTPublic) error {
	a := p.ObjectAttributes
	switch {
	case !a.FixedTPM:
		return errors.New("the key is exportable (no fixedTPM)")
	case !a.FixedParent:
		return errors.New("the key can be duplicated (no fixedParent)")
	case !a.SensitiveDataOrigin:
		return errors.New("the key was not created by the TPM (no sensitiveDataOrigin)")
	case !a.SignEncrypt || a.Restricted:
		return errors.New("the key is not an unrestricted signing key")
	case p.Type != tpm2.TPMAlgECC:
		return fmt.Errorf("key type %#x, want ECC", p.Type)
	}
	ecc, err := p.Parameters.ECCDetail()
	if err != nil {
		return fmt.Errorf("ECC parameters: %w", err)
	}
	if ecc.CurveID != tpm2.TPMECCNistP256 {
		return fmt.Errorf("curve %#x, want NIST P-256", ecc.CurveID)
	}
	return nil
}

// Public returns the key's public half, an *ecdsa.PublicKey.
func (k *ResidentKey) Public() crypto.PublicKey { return k.pub }

// Sign signs digest (SHA-256, -384 or -512) in the TPM and returns an
// ASN.1 ECDSA signature.
func (k *ResidentKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var alg tpm2.TPMAlgID
	switch opts.HashFunc() {
	case crypto.SHA256:
		alg = tpm2.TPMAlgSHA256
	case crypto.SHA384:
		alg = tpm2.TPMAlgSHA384
	case crypto.SHA512:
		alg = tpm2.TPMAlgSHA512
	default:
		return nil, fmt.Errorf("tpm: signing: hash %v not supported", opts.HashFunc())
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("tpm: signing: digest is %d bytes, want %d", len(digest), opts.HashFunc().Size())
	}
	return callRaw(k.t, "signing with resident key", func(tr transport.TPMCloser) ([]byte, error) {
		rsp, err := tpm2.Sign{
			KeyHandle: k.handle,
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tr)
		if err != nil {
			return nil, err
		}
		return keyfile.EncodeSignatureASN1(&rsp.Signature)
	})
}

// Close flushes the key from the TPM; the key file can load it again. A
// second Close does nothing (the handle may by then name another object).
func (k *ResidentKey) Close() error {
	_, err := callRaw(k.t, "flushing resident key", func(tr transport.TPMCloser) (struct{}, error) {
		if k.closed {
			return struct{}{}, nil
		}
		k.closed = true
		_, err := tpm2.FlushContext{FlushHandle: k.handle.Handle}.Execute(tr)
		return struct{}{}, err
	})
	return err
}

// Certification is an AK's TPM2_Certify of a key: the key's public area,
// the TPMS_ATTEST the TPM signed (of type certify, naming the key and
// carrying the qualifying data) and the AK's signature (TPMT_SIGNATURE).
// go-attestation's attest.CertificationParameters.Verify checks it against
// the AK's public key, and that the key is resident.
type Certification = attest.CertificationParameters

// Certify has the AK certify k (TPM2_Certify) over qualifyingData: proof,
// to whoever trusts the AK, that k lives in the same TPM and was loaded
// there after qualifyingData was chosen. For ACME device-attest-01 the
// qualifying data is the SHA-256 of the key authorization.
func (a *AK) Certify(k *ResidentKey, qualifyingData []byte) (Certification, error) {
	if k.t != a.t {
		return Certification{}, errors.New("tpm: certify: the key and the AK are in different TPMs")
	}
	return callRaw(a.t, "certifying resident key", func(tr transport.TPMCloser) (Certification, error) {
		ak, err := a.loadedHandle(tr)
		if err != nil {
			return Certification{}, err
		}
		rsp, err := tpm2.Certify{
			ObjectHandle:   k.handle,
			SignHandle:     ak,
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(tr)
		if err != nil {
			return Certification{}, err
		}
		return Certification{
			Public:            k.public.Bytes(),
			CreateAttestation: rsp.CertifyInfo.Bytes(),
			CreateSignature:   tpm2.Marshal(rsp.Signature),
		}, nil
	})
}

// loadedHandle finds the AK among the transient objects loaded in the TPM
// (go-attestation does not say which handle it loaded the AK at): the one
// whose public area is the AK's.
func (a *AK) loadedHandle(tr transport.TPMCloser) (tpm2.AuthHandle, error) {
	if a.handle != nil {
		return *a.handle, nil
	}
	handles, err := listHandles(tr, uint32(tpm2.TPMHTTransient)<<24)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("listing loaded objects: %w", err)
	}
	var readErr error
	for _, h := range handles {
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(tr)
		if err != nil {
			readErr = err
			continue
		}
		if bytes.Equal(rsp.OutPublic.Bytes(), a.params.Public) {
			a.handle = &tpm2.AuthHandle{Handle: tpm2.TPMHandle(h), Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}
			return *a.handle, nil
		}
	}
	if readErr != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("the AK is not among the loaded objects (reading one failed: %w)", readErr)
	}
	return tpm2.AuthHandle{}, errors.New("the AK is not loaded")
}

func flush(tr transport.TPM, h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(tr)
}

// callRaw is call for commands sent with go-tpm's tpm2 API on the TPM's
// channel, under the same mutex as go-attestation's.
func callRaw[T any](t *TPM, what string, f func(tr transport.TPMCloser) (T, error)) (T, error) {
	return call(t, what, func(*attest.TPM) (T, error) { return f(tpmCloser{t.ch}) })
}
