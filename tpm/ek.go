package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EK is one of a TPM's endorsement keys.
type EK struct {
	// Public is the EK's public key: an *rsa.PublicKey, or an
	// *ecdsa.PublicKey on P-256 or P-384.
	Public crypto.PublicKey
	// Certificate is the EK certificate the manufacturer stored in the
	// TPM's NV memory, or nil if there is none. Its DER is Certificate.Raw.
	Certificate *x509.Certificate
	// DeviceID is the device ID computed from Public (package deviceid).
	DeviceID string
	// CertIndex is the NV index Certificate was read from (RSACertIndex,
	// or one of the ECC indices of ECCEKSlots), 0 without a certificate.
	CertIndex uint32
	// Handle is the persistent handle the EK is at, or 0 if none: the TPM
	// then makes it from its TCG template whenever it is needed (the same
	// key every time).
	Handle uint32

	tmpl *tpm2.TPMTPublic // an ECC EK at no handle: its template
}

// PublicKey returns Public.
func (ek *EK) PublicKey() crypto.PublicKey { return ek.Public }

// Type names the EK's kind of key: "RSA-2048", "ECC-P-256", "ECC-P-384".
func (ek *EK) Type() string {
	switch k := ek.Public.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECC-" + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", ek.Public)
}

// Where the TCG EK Credential Profile (version 2.5, section 2.2.1) keeps
// the RSA-2048 EK's certificate, and where that EK is conventionally
// persisted (the Registry of Reserved TPM 2.0 Handles reserves
// 0x81010000-0x810100FF for EKs).
const (
	RSACertIndex = 0x01c00002
	RSAEKHandle  = 0x81010001

	firstEKHandle = 0x81010000
	lastEKHandle  = 0x810100ff
)

// ECCEKSlot is an NV index where an ECC EK certificate may be, and the
// TCG template whose key it certifies.
type ECCEKSlot struct {
	CertIndex uint32
	Template  string // the TCG template's name: "L-2", "H-2", "H-3"
	Curve     string // "P-256", "P-384"
	// tmpl returns the template to make the EK with when it is at no
	// persistent handle; nil: only a persisted EK is used.
	tmpl func(tr transport.TPM) tpm2.TPMTPublic
}

// ECCEKSlots are the NV indices an ECC EK certificate is looked for at,
// in order of preference: the low-range P-256 EK most TPMs with an ECC EK
// have (template L-2), then the high-range P-256 and P-384 ones (H-2,
// H-3; swtpm makes an H-3 EK). An H-2 EK is used only where the TPM holds
// it at a persistent handle.
var ECCEKSlots = []ECCEKSlot{
	{CertIndex: 0x01c0000a, Template: "L-2", Curve: "P-256", tmpl: templateL2},
	{CertIndex: 0x01c00014, Template: "H-2", Curve: "P-256"},
	{CertIndex: 0x01c00016, Template: "H-3", Curve: "P-384", tmpl: func(transport.TPM) tpm2.TPMTPublic { return templateH3 }},
}

// eccEKNonceIndex holds, on some TPMs, the nonce that goes into the L-2
// template's unique field (EK Credential Profile 2.2.1.5).
const eccEKNonceIndex = 0x01c0000b

// templateL2 is the TCG's low-range ECC P-256 EK template (L-2), go-tpm's
// ECCEKTemplate, with the TPM's EK nonce if it has one (as go-attestation
// reads it for its own ECC EK).
func templateL2(tr transport.TPM) tpm2.TPMTPublic {
	t := tpm2.ECCEKTemplate
	x := make([]byte, 32)
	if nonce, err := readNV(tr, eccEKNonceIndex); err == nil {
		copy(x, nonce)
	}
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	})
	return t
}

// templateH3 is the TCG's high-range ECC P-384 EK template (H-3): SHA-384
// names, AES-256 protection, an empty unique field, and PolicyB_SHA384 as
// its policy, with userWithAuth set.
var templateH3 = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA384,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		AdminWithPolicy:     true,
		Restricted:          true,
		Decrypt:             true,
	},
	AuthPolicy: tpm2.TPM2BDigest{Buffer: []byte{
		0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC,
		0xF5, 0xFD, 0x3A, 0x1A, 0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4,
		0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA, 0xCB, 0x47, 0xBA, 0x09,
		0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
	}},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID: tpm2.TPMECCNistP384,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// EK returns the endorsement key that names the device (see EKs).
func (t *TPM) EK() (*EK, error) {
	eks, err := t.eks(false)
	if err != nil {
		return nil, err
	}
	return eks[0], nil
}

// EKs returns the TPM's endorsement keys, the one that names the device
// (EK) first:
//
//   - the RSA-2048 EK, if the TPM has a certificate for it (at
//     RSACertIndex) or holds it at RSAEKHandle: as devid always did, so a
//     device keeps its ID (credential activation with the RSA EK leaves it
//     at RSAEKHandle);
//   - otherwise the first ECC EK with a certificate (ECCEKSlots): a TPM
//     whose only EK is an ECC one;
//   - otherwise, on a TPM with no EK certificate at all, the RSA-2048 EK
//     of the TCG template, as before.
//
// After it come the ECC EKs that have a certificate. An ECC EK
// certificate whose key the TPM holds at no persistent handle, and whose
// template does not give that key either, is left out (and logged), or is
// an error when no RSA EK names the device: devid would otherwise name it
// by a key its owner never saw.
func (t *TPM) EKs() ([]*EK, error) { return t.eks(true) }

func (t *TPM) eks(all bool) ([]*EK, error) {
	return call(t, "reading endorsement keys", func(at *attest.TPM) ([]*EK, error) {
		tr := tpmCloser{t.ch}
		persistent, err := persistentKeys(tr)
		if err != nil {
			return nil, fmt.Errorf("listing persistent keys: %w", err)
		}
		_, rsaPersistent := persistent[RSAEKHandle].(*rsa.PublicKey)
		rsaCert, err := nvDefined(tr, RSACertIndex)
		if err != nil {
			return nil, err
		}
		var out []*EK
		if rsaPersistent || rsaCert {
			ek, err := rsaEK(at, rsaPersistent)
			if err != nil {
				return nil, err
			}
			if !all {
				return []*EK{ek}, nil
			}
			out = append(out, ek)
		}
		var problems []string
		for _, slot := range ECCEKSlots {
			ek, err := t.eccEK(tr, slot, persistent)
			if err != nil {
				problems = append(problems, err.Error())
				t.logger.Warn("tpm: ECC EK left out", "err", err)
				continue
			}
			if ek == nil {
				continue
			}
			out = append(out, ek)
			if !all {
				return out, nil
			}
		}
		if len(out) > 0 {
			return out, nil
		}
		if len(problems) > 0 {
			return nil, fmt.Errorf("no RSA EK certificate, and no usable ECC EK: %s", strings.Join(problems, "; "))
		}
		ek, err := rsaEK(at, false)
		if err != nil {
			return nil, err
		}
		return []*EK{ek}, nil
	})
}

// rsaEK is go-attestation's RSA EK: the certificate at RSACertIndex, or
// the key of the TCG template.
func rsaEK(at *attest.TPM, persistent bool) (*EK, error) {
	eks, err := at.EKs()
	if err != nil {
		return nil, err
	}
	for _, aek := range eks {
		pub, ok := aek.Public.(*rsa.PublicKey)
		if !ok {
			continue
		}
		id, err := deviceid.FromPublicKey(pub)
		if err != nil {
			return nil, err
		}
		ek := &EK{Public: pub, Certificate: aek.Certificate, DeviceID: id}
		if aek.Certificate != nil {
			ek.CertIndex = RSACertIndex
		}
		if persistent {
			ek.Handle = RSAEKHandle
		}
		return ek, nil
	}
	return nil, fmt.Errorf("no RSA endorsement key among %d", len(eks))
}

// eccEK reads the ECC EK certificate in slot and finds its key: at a
// persistent handle, or made from the slot's template. nil, nil: the slot
// holds no certificate.
func (t *TPM) eccEK(tr transport.TPM, slot ECCEKSlot, persistent map[uint32]crypto.PublicKey) (*EK, error) {
	ok, err := nvDefined(tr, slot.CertIndex)
	if err != nil || !ok {
		return nil, err
	}
	where := fmt.Sprintf("EK certificate at NV %#08x (%s %s)", slot.CertIndex, slot.Template, slot.Curve)
	der, err := readNV(tr, slot.CertIndex)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	cert, err := attest.ParseEKCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: its key is a %T, not an ECC key", where, cert.PublicKey)
	}
	if err := deviceid.CheckKey(pub); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	id, err := deviceid.FromPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	ek := &EK{Public: pub, Certificate: cert, DeviceID: id, CertIndex: slot.CertIndex}
	for _, h := range slices.Sorted(maps.Keys(persistent)) {
		if pub.Equal(persistent[h]) {
			ek.Handle = h
			return ek, nil
		}
	}
	if slot.tmpl == nil {
		return nil, fmt.Errorf("%s: the TPM holds its key at no persistent handle (0x81010000-0x810100ff), and devid makes no %s EK itself", where, slot.Template)
	}
	tmpl := slot.tmpl(tr)
	made, err := createEK(tr, tmpl)
	if err != nil {
		return nil, fmt.Errorf("%s: making its key from template %s: %w", where, slot.Template, err)
	}
	defer flush(tr, made.handle)
	if !pub.Equal(made.pub) {
		return nil, fmt.Errorf("%s: the TPM holds its key at no persistent handle, and template %s gives another key", where, slot.Template)
	}
	ek.tmpl = &tmpl
	return ek, nil
}

// persistentKeys reads the public keys at the EK handles
// (0x81010000-0x810100FF) the TPM uses.
func persistentKeys(tr transport.TPM) (map[uint32]crypto.PublicKey, error) {
	handles, err := listHandles(tr, firstEKHandle)
	if err != nil {
		return nil, err
	}
	keys := make(map[uint32]crypto.PublicKey)
	for _, h := range handles {
		if h > lastEKHandle {
			break
		}
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("reading the public key at %#08x: %w", h, err)
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("the public area at %#08x: %w", h, err)
		}
		if key, err := tpm2.Pub(*pub); err == nil {
			keys[h] = key
		}
	}
	return keys, nil
}

// loadedEK is an EK loaded for a command: at its persistent handle, or
// made for it (then flushed by the caller).
type loadedEK struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public *tpm2.TPMTPublic
	pub    crypto.PublicKey
}

// createEK makes the primary key of tmpl in the endorsement hierarchy.
func createEK(tr transport.TPM, tmpl tpm2.TPMTPublic) (*loadedEK, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tr)
	if err != nil {
		return nil, err
	}
	public, err := rsp.OutPublic.Contents()
	if err == nil {
		var pub crypto.PublicKey
		if pub, err = tpm2.Pub(*public); err == nil {
			return &loadedEK{handle: rsp.ObjectHandle, name: rsp.Name, public: public, pub: pub}, nil
		}
	}
	flush(tr, rsp.ObjectHandle)
	return nil, err
}

// load finds ek in the TPM: at its handle, or made from its template (the
// caller flushes it when made is true). It checks that the key found is
// ek's.
func (ek *EK) load(tr transport.TPM) (l *loadedEK, made bool, err error) {
	switch {
	case ek.Handle != 0:
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(ek.Handle)}.Execute(tr)
		if err != nil {
			return nil, false, fmt.Errorf("reading the EK at %#08x: %w", ek.Handle, err)
		}
		public, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, false, fmt.Errorf("the EK at %#08x: %w", ek.Handle, err)
		}
		pub, err := tpm2.Pub(*public)
		if err != nil {
			return nil, false, fmt.Errorf("the EK at %#08x: %w", ek.Handle, err)
		}
		l = &loadedEK{handle: tpm2.TPMHandle(ek.Handle), name: rsp.Name, public: public, pub: pub}
	case ek.tmpl != nil:
		if l, err = createEK(tr, *ek.tmpl); err != nil {
			return nil, false, fmt.Errorf("making the EK: %w", err)
		}
		made = true
	default:
		return nil, false, errors.New("the EK is at no persistent handle and has no template: use an EK from this TPM's EK or EKs")
	}
	if eq, ok := l.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(ek.Public) {
		if made {
			flush(tr, l.handle)
		}
		return nil, false, fmt.Errorf("the TPM's EK (%s) is not the EK %s", ek.where(), ek.DeviceID)
	}
	return l, made, nil
}

// where says where the TPM holds ek.
func (ek *EK) where() string {
	if ek.Handle != 0 {
		return fmt.Sprintf("at %#08x", ek.Handle)
	}
	return "made from its template"
}

// auth is the authorisation the EK's USER role takes: its (empty)
// password where userWithAuth is set (the high-range templates), else
// its policy, PolicySecret(TPM_RH_ENDORSEMENT) with the endorsement
// hierarchy's empty password, in a session of its name algorithm (the
// low-range templates).
func (l *loadedEK) auth() tpm2.Session {
	if l.public.ObjectAttributes.UserWithAuth {
		return tpm2.PasswordAuth(nil)
	}
	return tpm2.Policy(l.public.NameAlg, 16, func(tr transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonce}.Execute(tr)
		return err
	})
}

// nvDefined reports whether the NV index is defined.
func nvDefined(tr transport.TPM, index uint32) (bool, error) {
	_, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tr)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, tpm2.TPMRCHandle):
		return false, nil
	}
	return false, fmt.Errorf("reading NV index %#08x: %w", index, err)
}

// nvChunk is how much readNV reads at once when the TPM does not say
// (TPM_PT_NV_BUFFER_MAX): PC Client TPMs take at least 512 bytes.
const nvChunk = 512

// readNV reads the whole of an NV index, with its own (empty)
// authorisation where it allows that (TPMA_NV_AUTHREAD, as EK certificate
// indices do), else the owner's.
func readNV(tr transport.TPM, index uint32) ([]byte, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tr)
	if err != nil {
		return nil, err
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !pub.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Name: tpm2.HandleName(tpm2.TPMRHOwner), Auth: tpm2.PasswordAuth(ownerAuth)}
	}
	chunk := uint16(nvChunk)
	if caps, err := (tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTNVBufferMax), PropertyCount: 1}).Execute(tr); err == nil {
		if props, err := caps.CapabilityData.Data.TPMProperties(); err == nil && len(props.TPMProperty) == 1 &&
			props.TPMProperty[0].Property == tpm2.TPMPTNVBufferMax && props.TPMProperty[0].Value > 0 && props.TPMProperty[0].Value < 1<<16 {
			chunk = uint16(props.TPMProperty[0].Value)
		}
	}
	out := make([]byte, 0, pub.DataSize)
	for len(out) < int(pub.DataSize) {
		n := min(chunk, pub.DataSize-uint16(len(out)))
		r, err := tpm2.NVRead{AuthHandle: auth, NVIndex: tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rsp.NVName},
			Size: n, Offset: uint16(len(out))}.Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("reading NV index %#08x at %d: %w", index, len(out), err)
		}
		if len(r.Data.Buffer) == 0 {
			return nil, fmt.Errorf("reading NV index %#08x at %d: no data", index, len(out))
		}
		out = append(out, r.Data.Buffer...)
	}
	return out[:pub.DataSize], nil
}
