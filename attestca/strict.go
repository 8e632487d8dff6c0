package attestca

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/legacy/tpm2"
)

// checkAKEncoding refuses an AK public area (TPMT_PUBLIC) or creation
// signature (TPMT_SIGNATURE) with bytes after the structure, or in a form
// other than the one a TPM writes. go-attestation's parsers read a prefix
// and ignore the rest; the creation data and attestation need no check here,
// as the signature covers the attestation and the attestation the hash of
// the creation data.
func checkAKEncoding(p *AttestationParameters) error {
	pub, err := tpm2.DecodePublic(p.Public)
	if err != nil {
		return fmt.Errorf("AK public area: %v", err)
	}
	enc, err := pub.Encode()
	if err != nil {
		return fmt.Errorf("AK public area: %v", err)
	}
	switch {
	case len(p.Public) > len(enc) && bytes.HasPrefix(p.Public, enc):
		return fmt.Errorf("AK public area: %d bytes after the TPMT_PUBLIC structure", len(p.Public)-len(enc))
	case !bytes.Equal(p.Public, enc):
		return fmt.Errorf("AK public area: not in the TPM's encoding of a TPMT_PUBLIC structure")
	}
	buf := bytes.NewBuffer(p.CreateSignature)
	if _, err := tpm2.DecodeSignature(buf); err != nil {
		return fmt.Errorf("AK creation signature: %v", err)
	}
	if buf.Len() != 0 {
		return fmt.Errorf("AK creation signature: %d bytes after the TPMT_SIGNATURE structure", buf.Len())
	}
	return nil
}
