package enroll_test

import (
	"context"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/attestation"
	"go.step.sm/crypto/tpm/storage"
)

// TestStepAttestationClient: step's own TPM tooling
// (go.step.sm/crypto/tpm/attestation) enrols a swtpm against devid-ca.
func TestStepAttestationClient(t *testing.T) {
	ca := catest.Start(t, nil)
	sw, id := device(t, ca, "step-host", inventory.KindHost, "", "")
	ch, err := sw.RawChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// step's TPM opens and closes the channel around every operation.
	st, err := steptpm.New(steptpm.WithCommandChannel(keepOpen{ch}), steptpm.WithStore(storage.NewDirstore(t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eks, err := st.GetEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ek *steptpm.EK
	for _, e := range eks {
		if _, ok := e.Public().(*rsa.PublicKey); ok {
			ek = e
		}
	}
	if ek == nil {
		t.Fatal("no RSA EK")
	}
	ak, err := st.CreateAK(ctx, "devid-test")
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}), 0o644)
	client, err := attestation.NewClient(ca.URL+wire.AttestationPath, attestation.WithRootsFile(rootFile))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := client.Attest(ctx, st, ek, ak)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) < 1 || len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != id {
		t.Fatalf("step's client got a chain whose AK certificate does not name %s", id)
	}
	if !chain[0].PublicKey.(*rsa.PublicKey).Equal(ak.Public()) {
		t.Fatal("the AK certificate is not for step's AK")
	}
	// step's tooling caches the AK certificate and presents it at every
	// later enrolment: it lasts a year by default, not a device
	// certificate's 24 h.
	if life := chain[0].NotAfter.Sub(chain[0].NotBefore); life < 365*24*time.Hour {
		t.Fatalf("the AK certificate lasts %s, want a year", life)
	}
}

// keepOpen is a channel whose Close does nothing: the test closes it.
type keepOpen struct{ *tpm.Channel }

func (keepOpen) Close() error { return nil }
