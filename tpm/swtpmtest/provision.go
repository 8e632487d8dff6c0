package swtpmtest

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Where swtpm_setup and the TCG put EKs and their certificates.
const (
	rsaEKHandle   = 0x81010001
	rsaCertIndex  = 0x01c00002
	p256EKHandle  = 0x81010002
	p256CertIndex = 0x01c0000a
	p384CertIndex = 0x01c00016 // swtpm_setup's ECC EK certificate
	firstEKHandle = 0x81010000
	lastEKHandle  = 0x810100ff
	nvWriteChunk  = 512
)

// provision changes the manufactured TPM's EKs as o says, with swtpm
// serving it for the time being.
func (i *Instance) provision(o Options) (err error) {
	ch, p, err := i.startChannel()
	if err != nil {
		return err
	}
	defer func() {
		ch.Close()
		err = errors.Join(err, p.wait())
	}()
	if o.ECCP256 {
		if err := i.addP256EK(ch, !o.TransientEKs); err != nil {
			return fmt.Errorf("swtpmtest: adding the P-256 EK: %w", err)
		}
	}
	if o.ECCOnly {
		if err := evict(ch, rsaEKHandle); err != nil {
			return fmt.Errorf("swtpmtest: evicting the RSA EK: %w", err)
		}
		if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHPlatform, NVIndex: nvHandle(ch, rsaCertIndex)}).Execute(ch); err != nil {
			return fmt.Errorf("swtpmtest: undefining the RSA EK certificate's NV index: %w", err)
		}
	}
	if o.TransientEKs {
		handles, err := persistentHandles(ch)
		if err != nil {
			return err
		}
		for _, h := range handles {
			if h >= firstEKHandle && h <= lastEKHandle {
				if err := evict(ch, h); err != nil {
					return fmt.Errorf("swtpmtest: evicting the EK at %#08x: %w", h, err)
				}
			}
		}
	}
	return nil
}

// addP256EK makes the EK of the TCG's L-2 template, persists it at
// 0x81010002 if persist, and writes a certificate for it, signed by the
// EK issuer, at NV 0x01c0000a with the attributes swtpm gives its own EK
// certificates.
func (i *Instance) addP256EK(tr transport.TPM, persist bool) error {
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(tr)
	if err != nil {
		return err
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tr)
	public, err := rsp.OutPublic.Contents()
	if err != nil {
		return err
	}
	pub, err := tpm2.Pub(*public)
	if err != nil {
		return err
	}
	if persist {
		if _, err := (tpm2.EvictControl{Auth: tpm2.TPMRHOwner, ObjectHandle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
			PersistentHandle: p256EKHandle}).Execute(tr); err != nil {
			return fmt.Errorf("persisting it: %w", err)
		}
	}
	// swtpm's own ECC EK certificate is the model: its subject, validity
	// and extensions (the TPM's SAN, tcg-kp-EKCertificate, keyAgreement).
	model, err := readNV(tr, p384CertIndex)
	if err != nil {
		return fmt.Errorf("reading swtpm's ECC EK certificate: %w", err)
	}
	m, err := x509.ParseCertificate(model)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, RawSubject: m.RawSubject, NotBefore: m.NotBefore, NotAfter: m.NotAfter,
		ExtraExtensions: m.Extensions}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.EKIssuer, pub, i.issuerKey)
	if err != nil {
		return err
	}
	nvPub, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(p384CertIndex)}.Execute(tr)
	if err != nil {
		return err
	}
	modelNV, err := nvPub.NVPublic.Contents()
	if err != nil {
		return err
	}
	attrs := modelNV.Attributes
	attrs.Written = false
	def := tpm2.TPMSNVPublic{NVIndex: p256CertIndex, NameAlg: modelNV.NameAlg, Attributes: attrs, DataSize: uint16(len(der))}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: tpm2.New2B(def)}).Execute(tr); err != nil {
		return fmt.Errorf("defining NV index %#08x: %w", p256CertIndex, err)
	}
	idx := nvHandle(tr, p256CertIndex)
	for off := 0; off < len(der); off += nvWriteChunk {
		end := min(off+nvWriteChunk, len(der))
		if _, err := (tpm2.NVWrite{AuthHandle: tpm2.TPMRHPlatform, NVIndex: idx,
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: der[off:end]}, Offset: uint16(off)}).Execute(tr); err != nil {
			return fmt.Errorf("writing NV index %#08x: %w", p256CertIndex, err)
		}
	}
	return nil
}

// nvHandle is an NV index with its name, as commands that take one want;
// without the name if reading it fails (the command then says why).
func nvHandle(tr transport.TPM, index uint32) tpm2.NamedHandle {
	h := tpm2.NamedHandle{Handle: tpm2.TPMHandle(index)}
	if rsp, err := (tpm2.NVReadPublic{NVIndex: h.Handle}).Execute(tr); err == nil {
		h.Name = rsp.NVName
	}
	return h
}

// readNV reads an NV index whole, with its own empty authorisation.
func readNV(tr transport.TPM, index uint32) ([]byte, error) {
	idx := nvHandle(tr, index)
	rsp, err := tpm2.NVReadPublic{NVIndex: idx.Handle}.Execute(tr)
	if err != nil {
		return nil, err
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	var out []byte
	for len(out) < int(pub.DataSize) {
		n := min(nvWriteChunk, int(pub.DataSize)-len(out))
		r, err := tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: idx.Handle, Name: idx.Name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex: idx, Size: uint16(n), Offset: uint16(len(out))}.Execute(tr)
		if err != nil {
			return nil, err
		}
		out = append(out, r.Data.Buffer...)
	}
	return out, nil
}

// evict removes the persistent object at h.
func evict(tr transport.TPM, h uint32) error {
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(tr)
	if err != nil {
		return err
	}
	_, err = tpm2.EvictControl{Auth: tpm2.TPMRHOwner, ObjectHandle: tpm2.NamedHandle{Handle: tpm2.TPMHandle(h), Name: rp.Name},
		PersistentHandle: tpm2.TPMIDHPersistent(h)}.Execute(tr)
	return err
}

// persistentHandles lists the TPM's persistent objects.
func persistentHandles(tr transport.TPM) ([]uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTPersistent) << 24, PropertyCount: 64}.Execute(tr)
	if err != nil {
		return nil, err
	}
	hl, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, h := range hl.Handle {
		out = append(out, uint32(h))
	}
	return out, nil
}
