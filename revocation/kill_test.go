package revocation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// killRounds is how many times TestActivateKill kills devid-ca during an
// activation.
const killRounds = 25

// TestActivateKill kills the real devid-ca process (SIGKILL) during
// `devid device activate`, killRounds times, at delays spread from before
// the request reaches it to after it has answered, and restarts it on the
// same directory each time. After every restart the device is either still
// quarantined or active, and either way the user certificate step-ca issued
// it before its quarantine is revoked in the served KRL (krl.IsRevoked and
// ssh-keygen -Q); an activation the CA answered is never lost. Each round
// starts from a quarantined device holding a certificate not yet revoked by
// serial: when a round ends active, the device gets a new certificate,
// which is good, and is quarantined again.
func TestActivateKill(t *testing.T) {
	sshdtest.Need(t, "ssh-keygen")
	sw := swtpmtest.New(t)
	dir := t.TempDir()
	bin := gobuild.Binary(t, "github.com/devid-ssh/devid/cmd/devid-ca")
	addr := freeAddr(t)
	caDir := filepath.Join(dir, "ca")
	if out, err := exec.Command(bin, "init", "--dir", caDir, "--dns", "localhost,127.0.0.1", "--address", addr).CombinedOutput(); err != nil {
		t.Fatalf("devid-ca init: %v\n%s", err, out)
	}
	ca := &caProcess{t: t, bin: bin, config: filepath.Join(caDir, "devid-ca.json"), url: "https://" + addr}
	t.Cleanup(ca.kill)
	root, err := pemutil.ReadCertificate(filepath.Join(caDir, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	adminCert, err := tls.LoadX509KeyPair(filepath.Join(caDir, "admin", "admin.crt"), filepath.Join(caDir, "admin", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	admin := func() *adminapi.Client { // a new connection for each process
		c, err := adminapi.NewClient(ca.url, roots, &adminCert)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()

	// A workstation, registered and enrolled the real way: its TPM
	// attested, a device certificate, and a user certificate step-ca
	// records as issued to it.
	ca.start()
	ek, err := sw.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	// A new key for every certificate (files in Go): the collection
	// allows file keys.
	yes := true
	if _, err := admin().SetCollection("file-keys", adminapi.CollectionUpdate{AllowFileKeys: &yes}); err != nil {
		t.Fatal(err)
	}
	d, err := admin().AddDevice(adminapi.NewDevice{Name: "laptop", Kind: string(adminapi.KindWorkstation), Collection: "file-keys",
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}))})
	if err != nil {
		t.Fatal(err)
	}
	enr := enroll.New(ca.url, roots, slog.New(slog.NewTextHandler(io.Discard, nil)))
	att, err := enr.Attest(ctx, sw.TPM)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	dc, err := enr.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	issue := func() *ssh.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := ssh.NewPublicKey(k.Public())
		c, err := enr.SSHCertificate(ctx, dc, "user", nil, pub)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// quarantine quarantines the device on a warm connection and returns
	// how long the CA took: the scale of the kill delays.
	quarantine := func(c *adminapi.Client) time.Duration {
		if _, err := c.WhoAmI(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := c.SetStatus(d.ID, adminapi.StatusQuarantined, "lost"); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	held := issue() // the certificate the device holds when quarantined
	took := quarantine(admin())

	var quarantined, activeAnswered, activeUnanswered int
	var delay time.Duration // of the last kill
	var aerr error          // what the activation the last kill ended got
	for round := 0; ; round++ {
		when := "before the first kill"
		if round > 0 {
			when = fmt.Sprintf("after kill %d (%v after the activation was sent)", round, delay)
			ca.start()
		}
		c := admin()
		d, err := c.Device(d.ID)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		switch {
		case round == 0:
		case d.Status == adminapi.StatusQuarantined && aerr == nil:
			t.Errorf("%s: devid-ca answered the activation, and the device is quarantined", when)
		case d.Status == adminapi.StatusQuarantined:
			quarantined++
		case aerr == nil:
			activeAnswered++
		default:
			activeUnanswered++
		}
		if round > 0 {
			t.Logf("%s (a status change took %v): activation answered: %v; the device is %s", when, took, aerr == nil, d.Status)
		}
		if d.Status != adminapi.StatusQuarantined && d.Status != adminapi.StatusActive {
			t.Errorf("%s: device is %s, want quarantined or active", when, d.Status)
		}
		wantKRL(t, fmt.Sprintf("%s, device %s", when, d.Status), ca.krl(roots, held.SignatureKey), []*ssh.Certificate{held}, nil)
		if t.Failed() {
			t.Fatalf("devid-ca's log, killed:\n%s\nrestarted:\n%s", readLog(ca.prevLog), readLog(ca.log))
		}
		if d.Status == adminapi.StatusActive {
			// A certificate issued now is good; then back to a
			// quarantined device with a certificate not revoked by
			// serial.
			fresh := issue()
			wantKRL(t, when+", a certificate issued once active", ca.krl(roots, held.SignatureKey), []*ssh.Certificate{held}, []*ssh.Certificate{fresh})
			held = fresh
			took = quarantine(c)
		}
		if round == killRounds {
			break
		}

		// Activate, and kill devid-ca after a delay from 0 to 1.25 times what
		// a status change took last: before the request reaches it,
		// during it, and after it has answered. The delay is what is
		// varied, not a wait for a condition.
		delay = took * 5 / 4 * time.Duration(round) / (killRounds - 1)
		if _, err := c.WhoAmI(); err != nil { // the connection made, so the delay is the request's
			t.Fatal(err)
		}
		answered := make(chan error, 1)
		go func() {
			_, err := c.SetStatus(d.ID, adminapi.StatusActive, "found")
			answered <- err
		}()
		time.Sleep(delay)
		ca.kill()
		aerr = <-answered
	}
	t.Logf("%d kills: %d left the device quarantined, %d active before devid-ca answered, %d active after it answered",
		killRounds, quarantined, activeUnanswered, activeAnswered)
}

// caProcess is devid-ca run as a process on a CA directory.
type caProcess struct {
	t       *testing.T
	bin     string
	config  string
	url     string
	cmd     *exec.Cmd
	done    chan struct{}
	runs    int    // processes started
	log     string // this run's output file
	prevLog string // the last run's
}

// start starts devid-ca serve and waits until it answers /health (up to 2
// minutes, a bound on a hang only).
func (p *caProcess) start() {
	p.t.Helper()
	p.runs++
	p.prevLog, p.log = p.log, filepath.Join(filepath.Dir(p.config), fmt.Sprintf("serve-%d.log", p.runs))
	out, err := os.Create(p.log)
	if err != nil {
		p.t.Fatal(err)
	}
	defer out.Close() // the process has it
	p.cmd = exec.Command(p.bin, "serve", "--config", p.config)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := hc.Get(p.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("devid-ca exited at start: %v\n%s", p.cmd.ProcessState, readLog(p.log))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("devid-ca did not answer /health within 2 minutes: %v\n%s", err, readLog(p.log))
		}
	}
}

// kill kills devid-ca with SIGKILL and waits until it is gone.
func (p *caProcess) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// krl fetches the served KRL and checks its signature by userCA.
func (p *caProcess) krl(roots *x509.CertPool, userCA ssh.PublicKey) []byte {
	p.t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	k, err := krldist.Fetch(context.Background(), hc, p.url, 0, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := krldist.Verify(k.Version, k.Body, k.Signature, []ssh.PublicKey{userCA}); err != nil {
		p.t.Fatal(err)
	}
	return k.Body
}

// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// readLog is a devid-ca run's output.
func readLog(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
