package tpm_test

import (
	"os"
	"testing"

	"github.com/devid-ssh/devid/tpm"
)

// TestDevice runs against a real TPM when DEVID_TEST_TPM_DEVICE names its
// device (such as /dev/tpmrm0): it reads the EK and the TPM's info. It
// leaves nothing in the TPM. Without the variable it is skipped: CI has no
// TPM device.
func TestDevice(t *testing.T) {
	path := os.Getenv("DEVID_TEST_TPM_DEVICE")
	if path == "" {
		t.Skip("DEVID_TEST_TPM_DEVICE not set")
	}
	tp, err := tpm.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	info, err := tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: device ID %s, EK certificate: %v, manufacturer %#x, model %q, firmware %s",
		path, ek.DeviceID, ek.Certificate != nil, info.Manufacturer, info.Model, info.FirmwareVersion())
}
