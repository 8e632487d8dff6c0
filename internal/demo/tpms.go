package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/pemutil"
)

// manufactureTPMs makes n software TPMs with EK certificates and returns the
// files holding those certificates.
func (d *demo) manufactureTPMs(ctx context.Context, n int) ([]string, error) {
	var files []string
	for i := range n {
		dir := filepath.Join(d.Dir, fmt.Sprintf("tpm-%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		inst, err := swtpmtest.Start(dir)
		if err != nil {
			return nil, err
		}
		ek, err := inst.TPM.EK()
		inst.Close()
		if err != nil {
			return nil, err
		}
		if ek.Certificate == nil {
			return nil, fmt.Errorf("TPM %d has no EK certificate", i+1)
		}
		f := filepath.Join(dir, "ek.crt")
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(d.Out, "TPM %d: EK certificate issued by %q, device ID %s\n", i+1, ek.Certificate.Issuer.CommonName, ek.DeviceID)
		files = append(files, f)
	}
	return files, nil
}

func rootFingerprint(file string) (string, error) {
	c, err := pemutil.ReadCertificate(file)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:]), nil
}
