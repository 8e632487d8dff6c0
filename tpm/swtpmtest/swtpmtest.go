// Package swtpmtest manufactures and runs a fresh software TPM (swtpm) for
// tests and demos: a TPM 2.0 with its own endorsement keys and an EK
// certificate issued by a private local CA.
//
// In a test:
//
//	sw := swtpmtest.New(t)         // skips if swtpm is not installed (fails under CI=true)
//	ek, err := sw.TPM.EK()
//	_, err = tpm.VerifyEKCertificate(ek.Certificate, x509.VerifyOptions{
//		Roots: sw.EKRoots(), Intermediates: sw.EKIntermediates(),
//	})
//
// Elsewhere (a demo command): [Start] in a directory of your own, and
// [Instance.Close] when done.
//
// For programs that reach the TPM by a socket's address (devid enroll
// --tpm unix:SOCK, devid-hostd), [Serve] (or [NewServed] in a test) makes
// one, writes its EK certificate to a file, and serves it: the software TPM
// of the demo, of the script tests (internal/clitest's swtpm command) and of
// the end-to-end tests.
//
// What it does: swtpm_setup manufactures the TPM state in a directory
// (about 0.65 s: an RSA-2048 EK at 0x81010001 with its certificate at NV
// index 0x1c00002, and an ECC P-384 EK). Its certificates come from
// swtpm_localca using a CA made in the same directory (an ECDSA P-256 root
// and issuer), through private swtpm_setup.conf and swtpm-localca.conf files:
// nothing reads or writes /etc/swtpm* or /var/lib/swtpm-localca. Then
//
//	swtpm socket --tpm2 --tpmstate dir=STATE --fd 3 --flags not-need-init,startup-clear
//
// serves the TPM on one end of a socketpair, the other end of which is the
// returned [tpm.TPM]'s channel: no TCP port, no socket path, and swtpm exits
// when the connection closes.
//
// # Endorsement keys
//
// By default the TPM has the EKs swtpm_setup makes: RSA-2048 (the one
// that names the device) and ECC P-384. [Options] make others, each
// certified by the same EK CA:
//
//	sw := swtpmtest.Options{ECCOnly: true}.New(t) // only the P-384 EK
//	sw := swtpmtest.Options{ECCOnly: true, ECCP256: true}.New(t)
//
// ECCOnly evicts the RSA EK from 0x81010001 and undefines its
// certificate's NV index 0x01c00002, leaving swtpm's P-384 EK (TCG
// template H-3) at 0x81010016 with its certificate at NV 0x01c00016.
// ECCP256 adds a P-256 EK of template L-2 at 0x81010002 with its
// certificate at NV 0x01c0000a, where most TPMs with an ECC EK keep it.
// TransientEKs evicts every EK from its persistent handle, leaving the
// certificates, as on a TPM whose EKs nobody persisted. The changes are
// made through the platform hierarchy right after manufacture, as a TPM
// vendor provisions a TPM.
//
// swtpm has no resource manager and room for three loaded objects: close
// AKs and keys when done with them.
package swtpmtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/tpm"
)

// Instance is a manufactured software TPM and the swtpm process serving it.
type Instance struct {
	// TPM is connected to the running swtpm. [Instance.Restart] replaces
	// it.
	TPM *tpm.TPM
	// StateDir holds the TPM's state; CADir the EK CA's certificates and
	// signing key, and the swtpm_setup and swtpm_localca configuration.
	StateDir, CADir string
	// EKRoot is the EK CA's self-signed root, EKIssuer the intermediate
	// certificate (signed by EKRoot) that signs the EK certificates.
	EKRoot, EKIssuer *x509.Certificate

	tools     map[string]string // program name to path
	proc      *process
	issuerKey *ecdsa.PrivateKey // signs the EK certificates Options add
}

// Options say how to manufacture a TPM; the zero value makes what
// swtpm_setup makes (see the package documentation).
type Options struct {
	// ECCOnly removes the RSA EK and its certificate.
	ECCOnly bool
	// ECCP256 adds an ECC P-256 EK (template L-2) at 0x81010002, with its
	// certificate at NV 0x01c0000a.
	ECCP256 bool
	// TransientEKs evicts every EK from its persistent handle, keeping
	// the certificates.
	TransientEKs bool
}

func (o Options) changes() bool { return o.ECCOnly || o.ECCP256 || o.TransientEKs }

// EKRoots returns a pool holding EKRoot.
func (i *Instance) EKRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(i.EKRoot)
	return p
}

// EKIntermediates returns a pool holding EKIssuer.
func (i *Instance) EKIntermediates() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(i.EKIssuer)
	return p
}

// New manufactures a TPM in a directory of t's and connects to a swtpm
// serving it; t's cleanup stops swtpm. Without swtpm installed it skips t,
// or fails it when the environment has CI=true.
func New(t testing.TB) *Instance {
	t.Helper()
	return Options{}.New(t)
}

// New is [New] for a TPM made as o says.
func (o Options) New(t testing.TB) *Instance {
	t.Helper()
	need(t)
	i, err := o.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := i.Close(); err != nil {
			t.Error(err)
		}
	})
	return i
}

// need skips t without swtpm, or fails it when CI=true.
func need(t testing.TB) {
	t.Helper()
	if _, err := lookTools(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swtpmtest: %v (CI=true: install the swtpm and swtpm-tools packages)", err)
		}
		t.Skipf("swtpmtest: %v", err)
	}
}

// Start manufactures a TPM in dir (which must exist; Start makes dir/state
// and dir/ca in it) and connects to a swtpm serving it.
func Start(dir string) (*Instance, error) { return Options{}.Start(dir) }

// Start is [Start] for a TPM made as o says.
func (o Options) Start(dir string) (*Instance, error) {
	tools, err := lookTools()
	if err != nil {
		return nil, fmt.Errorf("swtpmtest: %w", err)
	}
	i := &Instance{StateDir: filepath.Join(dir, "state"), CADir: filepath.Join(dir, "ca"), tools: tools}
	if err := i.manufacture(); err != nil {
		return nil, err
	}
	if o.changes() {
		if err := i.provision(o); err != nil {
			return nil, err
		}
	}
	if err := i.start(); err != nil {
		return nil, err
	}
	return i, nil
}

// Restart closes the connection, waits for swtpm to exit, and starts a new
// swtpm on the same state, connected to a new i.TPM: the TPM's persistent
// keys and NV memory remain, its loaded objects and sessions are gone, as
// after a reboot.
func (i *Instance) Restart() error {
	if err := i.Close(); err != nil {
		return err
	}
	return i.start()
}

// Close closes the connection (unless already closed) and waits for swtpm to
// exit. The directories remain.
func (i *Instance) Close() error {
	if i.proc == nil {
		return nil
	}
	var errs []error
	if i.TPM != nil {
		if err := i.TPM.Close(); err != nil && !errors.Is(err, tpm.ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, i.proc.wait())
	i.proc = nil
	return errors.Join(errs...)
}

// lookTools finds the programs swtpmtest runs on PATH.
func lookTools() (map[string]string, error) {
	paths := make(map[string]string)
	var missing []string
	for _, name := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		paths[name] = p
	}
	if len(missing) != 0 {
		return nil, fmt.Errorf("%s not found on PATH: %w", strings.Join(missing, ", "), exec.ErrNotFound)
	}
	return paths, nil
}

// manufacture makes the EK CA in i.CADir and the TPM state in i.StateDir.
func (i *Instance) manufacture() error {
	for _, d := range []string{i.StateDir, i.CADir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("swtpmtest: %w", err)
		}
	}
	if err := i.makeCA(); err != nil {
		return fmt.Errorf("swtpmtest: making EK CA in %s: %w", i.CADir, err)
	}
	ca := func(name string) string { return filepath.Join(i.CADir, name) }
	files := map[string]string{
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			i.CADir, ca("signkey.pem"), ca("issuercert.pem"), ca("certserial")),
		// Used only for platform certificates, which are not made;
		// written so the system's file is not read.
		"swtpm-localca.options": "--platform-manufacturer devid\n--platform-version 2.1\n--platform-model swtpmtest\n",
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			i.tools["swtpm_localca"], ca("swtpm-localca.conf"), ca("swtpm-localca.options")),
	}
	for name, content := range files {
		if err := os.WriteFile(ca(name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("swtpmtest: %w", err)
		}
	}
	cmd := exec.Command(i.tools["swtpm_setup"], "--tpm2", "--tpmstate", i.StateDir,
		"--create-ek-cert", "--config", ca("swtpm_setup.conf"))
	// swtpm_setup keeps its scratch files under TMPDIR: keep them here.
	cmd.Env = append(os.Environ(), "TMPDIR="+i.CADir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swtpmtest: %s: %w\n%s", cmd, err, out)
	}
	return nil
}

// makeCA writes the EK CA: a root certificate, and an issuer certificate and
// key for swtpm_localca. The root's key is not kept.
func (i *Instance) makeCA() error {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := func(serial int64, cn string, maxPathLen int) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{Organization: []string{"devid swtpmtest"}, CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLen:            maxPathLen,
			MaxPathLenZero:        maxPathLen == 0,
		}
	}
	rootTmpl := ca(1, "swtpmtest EK root", 1)
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	if i.EKRoot, err = x509.ParseCertificate(rootDER); err != nil {
		return err
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, ca(2, "swtpmtest EK issuer", 0), i.EKRoot, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	if i.EKIssuer, err = x509.ParseCertificate(issuerDER); err != nil {
		return err
	}
	i.issuerKey = issuerKey
	keyDER, err := x509.MarshalPKCS8PrivateKey(issuerKey)
	if err != nil {
		return err
	}
	for name, block := range map[string]*pem.Block{
		"swtpm-localca-rootca-cert.pem": {Type: "CERTIFICATE", Bytes: rootDER},
		"issuercert.pem":                {Type: "CERTIFICATE", Bytes: issuerDER},
		"signkey.pem":                   {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(i.CADir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// RawChannel closes i.TPM, starts a new swtpm on the same state, and
// returns a bare channel to it instead of a *tpm.TPM (i.TPM is then nil):
// for driving the TPM with another library, such as step's. Close still
// stops swtpm, once the caller has closed the channel.
func (i *Instance) RawChannel() (*tpm.Channel, error) {
	if err := i.Close(); err != nil {
		return nil, err
	}
	ch, p, err := i.startChannel()
	if err != nil {
		return nil, err
	}
	i.TPM, i.proc = nil, p
	return ch, nil
}

// start starts swtpm on a socketpair and connects i.TPM to it.
func (i *Instance) start() error {
	ch, p, err := i.startChannel()
	if err != nil {
		return err
	}
	t, err := tpm.New(ch, nil)
	if err != nil {
		ch.Close()
		return errors.Join(err, p.wait())
	}
	i.TPM, i.proc = t, p
	return nil
}

// startChannel starts swtpm on a socketpair and returns our end.
func (i *Instance) startChannel() (*tpm.Channel, *process, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("swtpmtest: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "swtpm "+i.StateDir)
	theirs := os.NewFile(uintptr(fds[1]), "swtpm fd 3")
	p, err := startProcess(theirs, i.tools["swtpm"], "socket", "--tpm2",
		"--tpmstate", "dir="+i.StateDir,
		"--fd", "3",
		"--flags", "not-need-init,startup-clear")
	theirs.Close() // swtpm holds its copy
	if err != nil {
		ours.Close()
		return nil, nil, err
	}
	return tpm.NewChannel(ours), p, nil
}

// process is a running swtpm.
type process struct {
	cmd    *exec.Cmd
	output bytes.Buffer // stdout and stderr
	done   chan error   // cmd.Wait's result
}

// startProcess starts a swtpm with fd3 as its file descriptor 3.
func startProcess(fd3 *os.File, path string, args ...string) (*process, error) {
	p := &process{cmd: exec.Command(path, args...), done: make(chan error, 1)}
	p.cmd.ExtraFiles = []*os.File{fd3}
	p.cmd.Stdout, p.cmd.Stderr = &p.output, &p.output
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("swtpmtest: starting %s: %w", p.cmd, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

// exitTimeout bounds how long wait lets swtpm take to exit once its
// connection is closed before killing it.
const exitTimeout = time.Minute

// wait waits for swtpm to exit, which it does once the connection closes,
// and kills it if it takes longer than exitTimeout.
func (p *process) wait() error {
	var err error
	select {
	case err = <-p.done:
	case <-time.After(exitTimeout):
		p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("did not exit within %v of its connection closing; killed", exitTimeout)
	}
	if err != nil {
		return fmt.Errorf("swtpmtest: %s: %w\n%s", p.cmd, err, p.output.Bytes())
	}
	return nil
}

// ServeUnix closes i.TPM and serves the TPM on a unix socket instead, the
// way a separate program (devid enroll, devid-hostd) reaches a software
// TPM: "unix:"+sock. The harness binds the socket and hands it to swtpm
// (--server type=unixio,fd=3), so it accepts connections from the moment
// ServeUnix returns: there is nothing to wait for. swtpm serves one
// connection after another and keeps what a client leaves loaded. stop ends
// swtpm and removes the socket.
func (i *Instance) ServeUnix(sock string) (stop func(), err error) {
	stopErr, err := i.serveUnix(sock)
	if err != nil {
		return nil, err
	}
	return func() { stopErr() }, nil
}

// serveUnix is ServeUnix; stop says whether swtpm had exited before it was
// stopped.
func (i *Instance) serveUnix(sock string) (stop func() error, err error) {
	if err := i.Close(); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("swtpmtest: %w", err)
	}
	f, err := l.File()
	l.SetUnlinkOnClose(false) // swtpm listens on it now
	l.Close()
	if err != nil {
		os.Remove(sock)
		return nil, fmt.Errorf("swtpmtest: %w", err)
	}
	p, err := startProcess(f, i.tools["swtpm"], "socket", "--tpm2", "--tpmstate", "dir="+i.StateDir,
		"--server", "type=unixio,fd=3", "--flags", "not-need-init,startup-clear")
	f.Close() // swtpm holds its copy
	if err != nil {
		os.Remove(sock)
		return nil, err
	}
	return func() error {
		defer os.Remove(sock)
		select {
		case err := <-p.done:
			return fmt.Errorf("swtpmtest: %s exited while serving %s: %v\n%s", p.cmd, sock, err, p.output.Bytes())
		default:
		}
		p.cmd.Process.Kill()
		<-p.done
		return nil
	}, nil
}

// Served is a manufactured software TPM served on a unix socket, for
// programs that reach it by address (devid --tpm, devid-hostd's "tpm").
type Served struct {
	// Instance is the TPM. Its TPM is closed: the socket's connections
	// are the way to it.
	*Instance
	EK     *tpm.EK // its endorsement key, read before serving
	EKCert string  // file holding EK.Certificate as PEM (DIR/ek.crt)
	Sock   string  // the socket (DIR/sock)
	Addr   string  // "unix:" + Sock

	stop func() error
}

// Serve manufactures a TPM in dir (as Start does), writes its EK
// certificate to dir/ek.crt, and serves it on the unix socket dir/sock
// (ServeUnix) until Stop. The path of the socket is limited to 107 bytes.
func Serve(dir string) (*Served, error) { return Options{}.Serve(dir) }

// Serve is [Serve] for a TPM made as o says; Served.EK is the EK that
// names the device (an ECC one with ECCOnly).
func (o Options) Serve(dir string) (*Served, error) {
	i, err := o.Start(dir)
	if err != nil {
		return nil, err
	}
	s := &Served{Instance: i, EKCert: filepath.Join(dir, "ek.crt"), Sock: filepath.Join(dir, "sock")}
	s.Addr = "unix:" + s.Sock
	if s.EK, err = i.TPM.EK(); err != nil {
		i.Close()
		return nil, fmt.Errorf("swtpmtest: %w", err)
	}
	if s.EK.Certificate == nil {
		i.Close()
		return nil, fmt.Errorf("swtpmtest: the TPM in %s has no EK certificate", dir)
	}
	if err := os.WriteFile(s.EKCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.EK.Certificate.Raw}), 0o644); err != nil {
		i.Close()
		return nil, fmt.Errorf("swtpmtest: %w", err)
	}
	if s.stop, err = i.serveUnix(s.Sock); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop ends swtpm and removes the socket. It fails if swtpm had exited
// before.
func (s *Served) Stop() error { return s.stop() }

// NewServed is Serve for a test: in a new directory, stopped when the test
// ends, which fails if swtpm exited before then. Without swtpm installed it
// skips t, or fails it when the environment has CI=true.
func NewServed(t testing.TB) *Served {
	t.Helper()
	return Options{}.NewServed(t)
}

// NewServed is [NewServed] for a TPM made as o says.
func (o Options) NewServed(t testing.TB) *Served {
	t.Helper()
	need(t)
	// Not t.TempDir(): a test's directory can make the socket's path
	// longer than a unix socket's 107 bytes.
	dir, err := os.MkdirTemp("", "swtpmtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := o.Serve(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}
