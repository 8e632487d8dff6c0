package agentd

import (
	"log/slog"
	"sync"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/krl"
	"golang.org/x/crypto/ssh"
)

// revokedWatch is the KRL task's Installed function: when a KRL the task
// installs revokes the agent's own certificate (the CA revoked it by
// serial, as it does for a user renamed, or by the device's key ID), it
// logs so and asks for a renewal at once, so that the user is not locked
// out until the scheduled renewal. It asks once per certificate: a renewal
// asked for is retried, with back-off, until one succeeds, and a device
// the CA refuses (quarantined, its owner disabled) says why in the
// status.
type revokedWatch struct {
	file string        // the certificate
	key  ssh.PublicKey // the key it certifies
	now  func() time.Time
	log  *slog.Logger
	ask  func() // asks for a renewal; must not block

	mu    sync.Mutex
	asked uint64 // the serial a renewal was last asked for
}

func (w *revokedWatch) installed(k *krl.KRL) {
	cert, _ := hostd.ReadCertificate(w.file, ssh.UserCert, w.key, w.now())
	if cert == nil || !k.IsRevoked(cert) {
		return
	}
	w.mu.Lock()
	again := w.asked == cert.Serial
	w.asked = cert.Serial
	w.mu.Unlock()
	if again {
		return
	}
	w.log.Warn("the CA's KRL revokes this agent's certificate: renewing it now", "serial", cert.Serial, "key_id", cert.KeyId,
		"principals", cert.ValidPrincipals, "krl_version", k.Version, "file", w.file)
	w.ask()
}
