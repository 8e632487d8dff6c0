package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/agentd/agenttest"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
	xagent "golang.org/x/crypto/ssh/agent"
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

// tpmHost is devid-hostd with the host key in its TPM, serving it to a real
// sshd through HostKeyAgent on a socket the test holds, as systemd holds
// devid-hostd.socket.
type tpmHost struct {
	dir, cfgFile, certFile, sshdHostKey string
	ln                                  *net.UnixListener
	sshd                                *sshdtest.Server
	proc                                *exec.Cmd
	done                                chan struct{}
	log                                 *syncBuffer
}

func newTPMHost(t *testing.T, ca *catest.CA, tpmAddr, loginPrincipal string) *tpmHost {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpmhost-") // a short path for the socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &tpmHost{dir: dir, cfgFile: filepath.Join(dir, "hostd.json"), log: new(syncBuffer),
		sshdHostKey: filepath.Join(dir, "etc", "ssh_host_tpm_key")}
	h.certFile = h.sshdHostKey + "-cert.pub"
	sock := filepath.Join(dir, "hostkey.sock")
	if h.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.ln.Close() })
	principals := filepath.Join(dir, "principals")
	os.WriteFile(principals, []byte(loginPrincipal+"\n"), 0o644)
	userCA, krl := filepath.Join(dir, "etc", "user_ca.pub"), filepath.Join(dir, "etc", "revoked.krl")
	// sshd starts first, as at boot: with a file host key of its own, and
	// the TPM key, whose public half devid-hostd writes, through the agent.
	h.sshd = sshdtest.Start(t, sshdtest.Options{Lines: []string{
		"HostKey " + h.sshdHostKey, "HostKeyAgent " + sock, "HostCertificate " + h.certFile,
		"TrustedUserCAKeys " + userCA, "RevokedKeys " + krl, "AuthorizedPrincipalsFile " + principals}})
	root := filepath.Join(dir, "root.crt")
	os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}), 0o644)
	cfg := map[string]any{
		"version": 1, "caUrl": ca.URL, "root": root, "tpm": tpmAddr,
		"tpmHostKey": filepath.Join(dir, "state", "ssh_host_key.tpm"), "sshdHostKey": h.sshdHostKey, "hostKeyAgent": sock,
		"hostCertificate": h.certFile, "principals": []string{"127.0.0.1"},
		"trustedUserCAKeys": userCA, "revokedKeys": krl,
		"sshd":   map[string]string{"binary": sshdtest.SSHD, "config": h.sshd.Config},
		"reload": map[string]string{"pidFile": h.sshd.PIDFile}, "metricsAddress": "off",
		"stateDir": filepath.Join(dir, "run"),
	}
	b, _ := json.Marshal(cfg)
	os.WriteFile(h.cfgFile, b, 0o644)
	t.Cleanup(func() {
		h.stop(t)
		if t.Failed() {
			t.Logf("devid-hostd log:\n%s", h.log.String())
		}
	})
	return h
}

// start starts devid-hostd on the held socket.
func (h *tpmHost) start(t *testing.T) {
	t.Helper()
	f, err := h.ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h.proc = exec.Command(hostdBin(t), "run", "--config", h.cfgFile)
	h.proc.Stdout, h.proc.Stderr = h.log, h.log
	if err := sshagenttest.StartActivated(h.proc, f); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { h.proc.Wait(); close(done) }()
	h.done = done
}

func (h *tpmHost) stop(t *testing.T) {
	if h.proc == nil {
		return
	}
	h.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(time.Minute): // bounds a hang only
		h.proc.Process.Kill()
		<-h.done
		t.Error("devid-hostd did not stop within a minute of SIGTERM")
	}
}

// waitServing waits for a host certificate other than old installed and
// sshd reloaded with it.
func (h *tpmHost) waitServing(t *testing.T, old uint64) *hostd.StatusData {
	t.Helper()
	var st *hostd.StatusData
	waitFor(t, 3*time.Minute, "the TPM host key's certificate installed", func() bool {
		var err error
		st, err = hostd.ReadStatus(filepath.Join(h.dir, "run"))
		return err == nil && st.HostCert != nil && st.HostCert.Serial != old && st.SSHDReloads > 0
	})
	h.sshd.WaitReloaded(t, int(st.SSHDReloads))
	return st
}

// TestHostdTPMHostKey tells the whole story of a host whose key lives in
// its TPM, and of a workstation whose key lives in its own:
//   - devid-hostd makes the host key in the TPM, writes only its public
//     half for sshd, gets the host certificate for it, and serves it on
//     HostKeyAgent; devid-agent gets the user certificate for the
//     workstation's TPM key and keeps the client's known_hosts (the host
//     CA) and KRL (RevokedHostKeys);
//   - ssh, trusting the host only through devid-agent's files and logging
//     in with devid-agent's key, reaches the host, shown the host
//     certificate for the TPM key;
//   - devid-hostd killed with -9: a connection made while it is down waits
//     on the held socket and completes once it is back, with the same key
//     and certificate;
//   - the host quarantined: within seconds devid-agent's KRL has it, and
//     ssh refuses the host.
func TestHostdTPMHostKey(t *testing.T) {
	sshdtest.Need(t, "swtpm", "swtpm_setup", "ss")
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	hostTPM, wsTPM := swtpmtest.NewServed(t), swtpmtest.NewServed(t)
	hostDev, err := inv.AddDevice("test", inventory.NewDevice{
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hostTPM.EK.Certificate.Raw})), Name: "web-1", Kind: "host", HostNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	wsDev, err := inv.AddDevice("test", inventory.NewDevice{
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: wsTPM.EK.Certificate.Raw})), Name: "laptop-1", Kind: "workstation"})
	if err != nil {
		t.Fatal(err)
	}
	agent := agenttest.Start(t, ca, wsTPM.Addr)
	agent.WaitCertificate(t, 0)
	agent.WaitStatus(t, "known_hosts and the KRL", func(s *agentd.Status) bool { return s.HostCAKeys > 0 && s.KRLVersion > 0 })

	h := newTPMHost(t, ca, hostTPM.Addr, wsDev.ID)
	h.start(t)
	st := h.waitServing(t, 0)
	pub, err := os.ReadFile(h.sshdHostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.sshdHostKey); !os.IsNotExist(err) {
		t.Fatalf("a file is at sshdHostKey %s (%v): the host key must exist only in the TPM", h.sshdHostKey, err)
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if cert := readCert(t, h.certFile); cert.KeyId != hostDev.ID || !bytes.Equal(cert.Key.Marshal(), hostKey.Marshal()) {
		t.Fatalf("host certificate: key ID %q, for key %s; want %s, for the TPM key %s", cert.KeyId,
			ssh.FingerprintSHA256(cert.Key), hostDev.ID, ssh.FingerprintSHA256(hostKey))
	}
	client := sshdrun.Client{Agent: agent.Socket, KnownHosts: agent.Paths.KnownHosts,
		Options: []string{"RevokedHostKeys=" + agent.Paths.KRL}, Verbose: true}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.sshd.Server.SSH(ctx, client)
	if serial, _ := sshdtest.HostCertSerial(out); err != nil || serial != st.HostCert.Serial {
		t.Fatalf("login through devid-agent to the TPM-keyed host: serial %d, %v; want serial %d\n%s", serial, err, st.HostCert.Serial, out)
	}

	// A reload (SIGHUP) keeps the key served on the same connections:
	// sshd keeps its agent connection for a whole session.
	conn, err := net.Dial("unix", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ag := xagent.NewClient(conn)
	if keys, err := ag.List(); err != nil || len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), hostKey.Marshal()) {
		t.Fatalf("the host key agent lists %v (%v), want the TPM host key", keys, err)
	}
	h.proc.Process.Signal(syscall.SIGHUP)
	waitFor(t, time.Minute, "the configuration reloaded", func() bool {
		return strings.Count(h.log.String(), "certificate in place") >= 1 && strings.Contains(h.log.String(), "reloading configuration")
	})
	waitFor(t, time.Minute, "the reloaded configuration's tasks", func() bool {
		_, after, _ := strings.Cut(h.log.String(), "reloading configuration")
		return strings.Contains(after, "certificate in place")
	})
	if keys, err := ag.List(); err != nil || len(keys) != 1 {
		t.Fatalf("after a reload, the agent connection made before it: %v, %v", keys, err)
	}
	if sig, err := ag.Sign(hostKey, []byte("data")); err != nil || hostKey.Verify([]byte("data"), sig) != nil {
		t.Fatalf("after a reload, a signature on the connection made before it: %v", err)
	}
	conn.Close()

	// kill -9: the socket stays (the test holds it, as systemd does); a
	// connection made meanwhile waits, and completes once hostd is back.
	h.proc.Process.Kill()
	<-h.done
	// The connection is timed to the host's signature (ssh -v prints the
	// host certificate once it has verified it), not to the end of the
	// login, which runs root's shell start-up files.
	type result struct {
		out       string
		err       error
		hostKeyAt time.Time
	}
	res := make(chan result, 1)
	began := time.Now()
	go func() {
		cmd := exec.Command("ssh", h.sshd.Server.Args(client)...)
		var buf strings.Builder
		stderr, err := cmd.StderrPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			res <- result{err: err}
			return
		}
		var at time.Time
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if at.IsZero() && strings.Contains(sc.Text(), "Server host certificate:") {
				at = time.Now()
			}
			buf.WriteString(sc.Text() + "\n")
		}
		err = cmd.Wait()
		res <- result{buf.String(), err, at}
	}()
	// Wait until sshd's connection to the agent waits in the socket's
	// queue (ss: a listening socket's Recv-Q), the connection not ended.
	waitFor(t, time.Minute, "sshd's agent connection queued on the held socket", func() bool {
		select {
		case r := <-res:
			t.Fatalf("a connection ended while devid-hostd was down (%v):\n%s", r.err, r.out)
		default:
		}
		return queued(t, h.ln.Addr().String()) > 0
	})
	restarted := time.Now()
	h.start(t)
	r := <-res
	if serial, _ := sshdtest.HostCertSerial(r.out); r.err != nil || serial != st.HostCert.Serial || r.hostKeyAt.Before(restarted) {
		t.Fatalf("the connection made while devid-hostd was down: serial %d, %v, host key signature at %v (devid-hostd restarted at %v)\n%s",
			serial, r.err, r.hostKeyAt, restarted, r.out)
	}
	t.Logf("a connection begun while devid-hostd was down had the host's signature %v after it began, %v after devid-hostd was started again",
		r.hostKeyAt.Sub(began).Round(time.Millisecond), r.hostKeyAt.Sub(restarted).Round(time.Millisecond))

	// The host quarantined: devid-agent's KRL has it within seconds, and
	// ssh refuses the host.
	if _, err := inv.SetStatus("test", hostDev.ID, inventory.StatusQuarantined, "compromised"); err != nil {
		t.Fatal(err)
	}
	want := ca.Server.PublishedKRL().Version
	agent.WaitStatus(t, "the KRL with the host", func(s *agentd.Status) bool { return s.KRLVersion >= want })
	out, err = h.sshd.Server.SSH(ctx, client)
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("ssh to a quarantined host: %v; want it refused as revoked\n%s", err, out)
	}
}

func readCert(t *testing.T, file string) *ssh.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := k.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s holds no certificate", file)
	}
	return c
}

// queued is how many connections wait in the queue of the listening unix
// socket at path (ss -x: a listener's Recv-Q).
func queued(t *testing.T, path string) int {
	t.Helper()
	out, err := exec.Command("ss", "-xlnH").Output()
	if err != nil {
		t.Fatalf("ss -xlnH: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 5 && f[4] == path {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("ss: Recv-Q %q: %v", f[2], err)
			}
			return n
		}
	}
	t.Fatalf("ss does not list the socket %s:\n%s", path, out)
	return 0
}
