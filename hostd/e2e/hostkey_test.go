package e2e

import (
	"testing"

	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
)

// BenchmarkHostKeyAgentTPM compares, side by side, a login and a bare
// handshake with sshd's host key in a software TPM (swtpm), served through
// HostKeyAgent as devid-hostd serves it, and with a host key file.
func BenchmarkHostKeyAgentTPM(b *testing.B) {
	sw := swtpmtest.New(b)
	file, err := sw.TPM.CreateResidentKey("bench host key")
	if err != nil {
		b.Fatal(err)
	}
	key, err := sw.TPM.LoadResidentKey(file)
	if err != nil {
		b.Fatal(err)
	}
	defer key.Close()
	sshagenttest.BenchmarkHandshake(b, key)
}
