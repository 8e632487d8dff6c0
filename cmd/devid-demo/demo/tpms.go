package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/pemutil"
)

// manufactureTPMs makes n software TPMs with EK certificates, as a vendor
// would, and serves each on a unix socket until the demo ends.
func (d *demo) manufactureTPMs(ctx context.Context, n int) ([]*swtpmtest.Served, error) {
	var out []*swtpmtest.Served
	for i := range n {
		dir := filepath.Join(d.Dir, fmt.Sprintf("tpm-%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		sw, err := swtpmtest.Serve(dir)
		if err != nil {
			return nil, err
		}
		d.cleanups = append(d.cleanups, func() { sw.Stop() })
		fmt.Fprintf(d.Out, "TPM %d: EK certificate issued by %q, device ID %s, served on %s\n", i+1, sw.EK.Certificate.Issuer.CommonName, sw.EK.DeviceID, sw.Sock)
		out = append(out, sw)
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
