package e2e

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/agentd/agenttest"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/procstat"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

// benchUser is an account whose shell is /bin/sh, which reads no start-up
// files: a login times ssh and sshd, not root's ~/.bashrc.
const benchUser = "devid-bench-agent"

// BenchmarkLogin compares, side by side against one sshd, a certificate
// login (ssh … true) whose key is served by devid-agent, every signature
// made in a software TPM (swtpm), with one whose key is a file in
// OpenSSH's own ssh-agent.
func BenchmarkLogin(b *testing.B) {
	sshdtest.Need(b, "swtpm", "swtpm_setup", "ssh-agent", "ssh-add")
	sshdtest.Account(b, benchUser)
	ca := catest.Start(b, nil)
	sw := swtpmtest.NewServed(b)
	dev := register(b, ca, sw, "laptop-1")
	a := agenttest.Start(b, ca, sw.Addr)
	a.WaitCertificate(b, 0)

	// The file key's certificate, from a CA of the test's that sshd
	// trusts beside devid-ca's user CA key.
	dir := b.TempDir()
	testCA := sshagenttest.NewSigner(b)
	devidCA, err := os.ReadFile(filepath.Join(ca.Dir, "certs", "ssh_user_ca.pub"))
	if err != nil {
		b.Fatal(err)
	}
	trusted := filepath.Join(dir, "user_cas.pub")
	sshagenttest.WriteFile(b, trusted, append(devidCA, ssh.MarshalAuthorizedKey(testCA.PublicKey())...))
	key := filepath.Join(dir, "id_ecdsa")
	sshdtest.Keygen(b, key)
	cert := &ssh.Certificate{Key: sshagenttest.ReadPublicKey(b, key+".pub"), Serial: 1, CertType: ssh.UserCert,
		KeyId: dev.ID, ValidPrincipals: []string{dev.ID}, ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, testCA); err != nil {
		b.Fatal(err)
	}
	sshagenttest.WriteFile(b, key+"-cert.pub", ssh.MarshalAuthorizedKey(cert))
	// sshd reads the principals file as the user: not in the test's
	// private directories.
	pdir, err := os.MkdirTemp("", "principals-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(pdir) })
	os.Chmod(pdir, 0o755)
	principals := filepath.Join(pdir, "principals")
	sshagenttest.WriteFile(b, principals, []byte(dev.ID+"\n"))
	os.Chmod(principals, 0o644)
	host := sshdtest.Start(b, sshdtest.Options{Lines: []string{"TrustedUserCAKeys " + trusted, "AuthorizedPrincipalsFile " + principals}})

	// OpenSSH's ssh-agent, holding the file key and its certificate.
	sock := filepath.Join(dir, "ssh-agent.sock")
	agentProc := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agentProc.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { agentProc.Process.Kill(); agentProc.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := sshAdd(sock, key)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("ssh-add: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond) // ssh-agent making its socket
	}
	if out, _ := sshAdd(sock, "-L"); !strings.Contains(out, "-cert-v01@openssh.com") {
		b.Fatalf("ssh-agent does not hold the certificate:\n%s", out)
	}

	for _, c := range []struct{ name, sock string }{{"agent=devid-tpm", a.Socket}, {"agent=ssh-agent-file", sock}} {
		args := sshdrun.Client{User: benchUser, Agent: c.sock}.Args(host.Port)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command("ssh", args...).CombinedOutput(); err != nil {
					b.Fatalf("ssh: %v\n%s%s", err, out, host.Tail(20))
				}
			}
		})
	}
	b.Logf("devid-agent made %d signatures", a.Status().Signatures)
}

// BenchmarkAgentIdle measures an idle devid-agent (16 h certificate, host
// CA keys every hour, the KRL long-polled): resident memory, and wakeups
// per second counted as context switches of all its threads over 61 s,
// which covers the KRL poll's 55 s wait and the renewal re-check.
func BenchmarkAgentIdle(b *testing.B) {
	sshdtest.Need(b, "swtpm", "swtpm_setup")
	ca := catest.Start(b, nil)
	sw := swtpmtest.NewServed(b)
	register(b, ca, sw, "laptop-1")
	a := agenttest.New(b, ca, sw.Addr)
	a.SetConfig(b, "hostCaInterval", "1h")
	a.Restart(b)
	st := a.WaitCertificate(b, 0)
	a.WaitStatus(b, "host CA keys and the KRL", func(s *agentd.Status) bool { return s.HostCAKeys > 0 && s.KRLVersion > 0 })
	time.Sleep(2 * time.Second) // let start-up settle before measuring idleness
	b.ResetTimer()
	var rss, wakeups float64
	for range b.N {
		var err error
		if rss, wakeups, err = procstat.Idle(st.PID, 61*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(rss, "RSS-MiB")
	b.ReportMetric(wakeups, "wakeups/s")
	a.Signal(b, syscall.SIGTERM)
}
