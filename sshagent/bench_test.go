package sshagent_test

import (
	"testing"

	"github.com/devid-ssh/devid/sshagent/sshagenttest"
)

// BenchmarkHandshake: a full ssh login to sshd whose host key an agent
// serves (an in-memory ECDSA P-256 key here; the TPM side runs
// sshagenttest.BenchmarkHandshake with its own signer) beside one to sshd
// with a host key file.
func BenchmarkHandshake(b *testing.B) {
	sshagenttest.BenchmarkHandshake(b, sshagenttest.NewKey(b))
}
