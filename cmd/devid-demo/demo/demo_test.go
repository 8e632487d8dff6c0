package demo

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/sshdtest"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }

// TestDemo runs the whole `make demo` story with freshly built binaries and
// checks that each part happened.
func TestDemo(t *testing.T) {
	sshdtest.Need(t, "swtpm", "swtpm_setup", "ssh-keygen", "ssh", sshdtest.SSHD)
	sshdtest.NeedRoot(t) // the demo's sshd part
	bin := gobuild.Dir(t, "github.com/devid-ssh/devid/cmd/devid", "github.com/devid-ssh/devid/cmd/devid-ca",
		"github.com/devid-ssh/devid/cmd/devid-hostd", "github.com/devid-ssh/devid/cmd/devid-principals",
		"github.com/devid-ssh/devid/cmd/devid-agent")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := Run(ctx, Options{Bin: bin, Out: &out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Root fingerprint:",
		"imported: 2 added",
		"line 2: added laptop-alice (urn:devid:pending:",
		"registered web-1",
		"Wrote the token to",
		"device.bind",
		"status \"pending\" → \"active\"",
		"enrolment token already used",
		"key is not TPM-resident",
		"bank.example.com",
		"collection:sre-laptops",
		"key:tpm",
		"mdm-export.csv:2: ek:",
		"BEGIN TSS2 PRIVATE KEY",
		"-cert-v01@openssh.com",
		"logged in to",
		"another TPM",
		"is now quarantined",
		"Permission denied (publickey)",
		"revoked by file",
		"is quarantined",
		"device.quarantine",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's story lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}
