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

// softTPM is a manufactured software TPM served on a unix socket.
type softTPM struct {
	EKCert string // file holding its EK certificate
	Addr   string // unix:SOCKET, for --tpm
	stop   func()
}

// manufactureTPMs makes n software TPMs with EK certificates, as a vendor
// would, and serves each on a unix socket until the demo ends.
func (d *demo) manufactureTPMs(ctx context.Context, n int) ([]*softTPM, error) {
	var out []*softTPM
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
		if err != nil {
			inst.Close()
			return nil, err
		}
		if ek.Certificate == nil {
			inst.Close()
			return nil, fmt.Errorf("TPM %d has no EK certificate", i+1)
		}
		f := filepath.Join(dir, "ek.crt")
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}), 0o644); err != nil {
			inst.Close()
			return nil, err
		}
		sock := filepath.Join(dir, "sock")
		stop, err := inst.ServeUnix(sock)
		if err != nil {
			return nil, err
		}
		d.cleanups = append(d.cleanups, stop)
		fmt.Fprintf(d.Out, "TPM %d: EK certificate issued by %q, device ID %s, served on %s\n", i+1, ek.Certificate.Issuer.CommonName, ek.DeviceID, sock)
		out = append(out, &softTPM{EKCert: f, Addr: "unix:" + sock, stop: stop})
	}
	return out, nil
}

func rootFingerprint(file string) (string, error) {
	c, err := pemutil.ReadCertificate(file)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:]), nil
}
