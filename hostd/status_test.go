package hostd_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/hostd"
)

// TestStatusSerialIsAString: status.json, which scripts read, carries the
// host certificate's serial as a string: jq 1.6 rounds integers above 2^53.
func TestStatusSerialIsAString(t *testing.T) {
	dir := t.TempDir()
	const serial = 10071804687342786553
	b, err := json.Marshal(hostd.StatusData{HostCert: &hostd.CertStatus{Serial: serial}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"serial":"10071804687342786553"`) {
		t.Fatalf("status.json: %s, want the serial as a string", b)
	}
	if err := os.WriteFile(filepath.Join(dir, "status.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := hostd.ReadStatus(dir)
	if err != nil || st.HostCert == nil || st.HostCert.Serial != serial {
		t.Fatalf("read back: %+v %v", st, err)
	}
}
