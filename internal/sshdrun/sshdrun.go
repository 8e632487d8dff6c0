// Package sshdrun runs the real OpenSSH sshd, from a config in a directory
// of the caller's, and logs in to it with the real ssh client. It is the one
// sshd harness of devid's tests (through internal/sshdtest) and of
// `make demo`. It runs sshd two ways:
//
//   - [Start]: a daemon (sshd -D) on a loopback port, which a test reloads
//     (SIGHUP) as devid-hostd does, and logs in to as any account.
//   - [NewInetd]: inetd mode (sshd -i), a new sshd for every connection,
//     speaking SSH on its standard input and output: no port, no daemon,
//     nothing to wait for, and, run as a user other than root, no root. For
//     a test that only asks sshd a question (does this certificate log in,
//     with this KRL, this principals command?). See [Inetd] for what works
//     without root.
//
// sshd gives no readiness signal, and a reload is a re-exec: on SIGHUP sshd
// closes its listener, executes itself again and listens anew, and a
// connection made meanwhile is refused. The harness therefore waits on what
// sshd itself says in its log (-E): "Server listening on …" after every
// start, "Received SIGHUP; restarting." before every re-exec. WaitReloaded
// waits until sshd has taken a given number of reloads and listens again,
// and SSH retries, for a bounded time, a connection refused or reset before
// sshd said anything (what the re-exec window looks like to a client); it
// never retries a login sshd refused.
package sshdrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SSHD is sshd's absolute path (sshd refuses to re-exec otherwise).
const SSHD = "/usr/sbin/sshd"

// What sshd logs (at INFO, so at every LogLevel the harness allows) when it
// starts listening and when it takes a SIGHUP.
const (
	logListening = "Server listening on "
	logRestart   = "Received SIGHUP; restarting."
)

// privsepDir is sshd's privilege separation directory, which it needs when
// run as root.
const privsepDir = "/run/sshd"

// logLevels are the LogLevels Options allow: every one that keeps sshd's
// INFO lines.
var logLevels = []string{"DEBUG", "DEBUG1", "DEBUG2", "DEBUG3", "VERBOSE", "INFO"}

// Options describe the sshd to start (Start) or to run per connection
// (NewInetd).
type Options struct {
	// Dir holds sshd's files (config, log, pid file, generated host key).
	// It must exist.
	Dir string
	// HostKey is the private host key; an ECDSA key is generated in Dir
	// when empty.
	HostKey string
	// LogLevel is sshd's LogLevel: DEBUG (the default) or VERBOSE. The
	// harness reads sshd's INFO lines, so nothing quieter is allowed.
	LogLevel string
	// Lines are added to the sshd_config the harness writes (HostKey,
	// LogLevel, no password or keyboard-interactive authentication, no
	// PAM, and for Start Port, ListenAddress and PidFile).
	Lines []string
}

// hostKey returns o.HostKey, or makes one in o.Dir.
func hostKey(o Options) (string, error) {
	if o.HostKey != "" {
		return o.HostKey, nil
	}
	key := filepath.Join(o.Dir, "ssh_host_ecdsa_key")
	if err := Keygen(key); err != nil {
		return "", err
	}
	return key, nil
}

// baseLines are the sshd_config lines of both modes, then o.Lines.
func baseLines(hostKey string, o Options) []string {
	return append([]string{
		"HostKey " + hostKey,
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"LogLevel " + o.LogLevel,
	}, o.Lines...)
}

// Server is a running sshd.
type Server struct {
	Dir     string // its files
	Config  string // sshd_config
	HostKey string // private host key; .pub beside it
	PIDFile string
	Log     string // sshd's log (-E)
	Port    int
	Addr    string // 127.0.0.1:Port
	PID     int

	cmd  *exec.Cmd
	out  string // sshd's own stdout and stderr, before -E takes over
	done chan struct{}
}

// Start writes sshd_config in o.Dir and starts sshd, and returns once it
// accepts connections (or fails if it exits first or does not listen
// within ctx). Stop it with Stop.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("sshdrun: no directory")
	}
	if o.LogLevel == "" {
		o.LogLevel = "DEBUG"
	}
	if !slices.Contains(logLevels, o.LogLevel) {
		return nil, fmt.Errorf("sshdrun: LogLevel %s hides the lines the harness waits on", o.LogLevel)
	}
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		return nil, fmt.Errorf("sshdrun: %w", err)
	}
	hostKey, err := hostKey(o)
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: o.Dir, Config: filepath.Join(o.Dir, "sshd_config"), HostKey: hostKey,
		PIDFile: filepath.Join(o.Dir, "sshd.pid"), Log: filepath.Join(o.Dir, "sshd.log")}
	// The port is free when FreePort looks, not always when sshd binds it:
	// another program may take it in between. Then sshd says so, and
	// exits, and the harness tries another port.
	for attempt := 1; ; attempt++ {
		err := s.launch(ctx, o)
		if err == nil {
			return s, nil
		}
		log, _ := os.ReadFile(s.Log)
		if attempt == 5 || !bytes.Contains(log, []byte("Address already in use")) {
			return nil, err
		}
		os.Remove(s.Log)
	}
}

// launch starts sshd on a free port and waits until it listens.
func (s *Server) launch(ctx context.Context, o Options) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	s.Port, s.Addr = port, "127.0.0.1:"+strconv.Itoa(port)
	lines := append([]string{
		"Port " + strconv.Itoa(s.Port),
		"ListenAddress 127.0.0.1",
		"PidFile " + s.PIDFile,
	}, baseLines(s.HostKey, o)...)
	if err := s.WriteConfig(lines...); err != nil {
		return err
	}
	// A file, not a pipe: sshd's children inherit it, and a pipe would
	// keep Wait waiting for them.
	s.out = filepath.Join(o.Dir, "sshd.out")
	out, err := os.Create(s.out)
	if err != nil {
		return fmt.Errorf("sshdrun: %w", err)
	}
	defer out.Close()
	s.cmd = exec.Command(SSHD, "-D", "-f", s.Config, "-E", s.Log)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("sshdrun: %w", err)
	}
	s.PID = s.cmd.Process.Pid
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	if err := s.WaitReloaded(ctx, 0); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// Stop kills sshd and waits for it to exit.
func (s *Server) Stop() {
	s.cmd.Process.Kill()
	<-s.done
}

// Done is closed when sshd has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// WriteConfig replaces sshd_config (sshd reads it again on a reload).
func (s *Server) WriteConfig(lines ...string) error {
	if err := os.WriteFile(s.Config, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("sshdrun: %w", err)
	}
	return nil
}

// Generations reads sshd's log: how many reloads (SIGHUPs) sshd has taken,
// and how many times it has started listening.
func (s *Server) Generations() (restarts, listens int, err error) {
	b, err := os.ReadFile(s.Log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, 0, fmt.Errorf("sshdrun: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		switch {
		case strings.Contains(line, logRestart):
			restarts++
		case strings.Contains(line, logListening):
			listens++
		}
	}
	return restarts, listens, nil
}

// WaitReloaded waits until sshd has taken at least n reloads, listens
// again after the last, and is ready for the next (its SIGHUP handler is in
// place), or until ctx is done or sshd exits.
//
// sshd takes two SIGHUPs that arrive together as one, and ignores one that
// arrives after it executed itself again but before it set its handler, so
// n counts SIGHUPs sent while it was ready: one after WaitReloaded returned
// is always taken.
func (s *Server) WaitReloaded(ctx context.Context, n int) error {
	var restarts, listens int
	for {
		var err error
		if restarts, listens, err = s.Generations(); err != nil {
			return err
		}
		if restarts >= n && listens == restarts+1 && catches(s.PID, syscall.SIGHUP) {
			return nil
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.out)
			return fmt.Errorf("sshd exited: %s%s", b, tail(s.Log, 20))
		case <-ctx.Done():
			return fmt.Errorf("sshdrun: sshd on %s has taken %d reload(s) of %d and listened %d time(s): %w%s",
				s.Addr, restarts, n, listens, ctx.Err(), tail(s.Log, 20))
		case <-time.After(10 * time.Millisecond): // sshd's log is the only signal it gives
		}
	}
}

// catches says whether process pid has a handler for sig (SigCgt in
// /proc/PID/status).
func catches(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// Client says how ssh logs in.
type Client struct {
	User string // default root
	// Identity is the private key (-i); Certificate its certificate
	// (CertificateFile), if any. Only these are offered (IdentitiesOnly).
	Identity, Certificate string
	// Agent is an ssh-agent socket (IdentityAgent) whose keys and
	// certificates ssh offers; with it, IdentitiesOnly is off.
	Agent string
	// KnownHosts is the known_hosts file that must vouch for the host
	// (StrictHostKeyChecking yes); "" for none (StrictHostKeyChecking no, for
	// tests of user authentication alone).
	KnownHosts string
	// HostKeyAlias is the name the host is looked up by in KnownHosts;
	// default 127.0.0.1.
	HostKeyAlias string
	// Options are more ssh_config options, each "Keyword=value" (-o).
	Options []string
	Verbose bool   // -v: ssh says which host certificate it was shown
	Command string // default "true"
}

// Args is the ssh command line that logs in as c says to the sshd on
// 127.0.0.1:port.
func (c Client) Args(port int) []string {
	return c.args("-p", strconv.Itoa(port))
}

// args is the ssh command line that logs in as c says, reaching sshd as
// the options reach say (a port, a ProxyCommand).
func (c Client) args(reach ...string) []string {
	user, command := c.User, c.Command
	if user == "" {
		user = "root"
	}
	if command == "" {
		command = "true"
	}
	strict, known := "yes", c.KnownHosts
	if known == "" {
		strict, known = "no", "/dev/null"
	}
	args := []string{"-F", "/dev/null"}
	if c.Verbose {
		args = append(args, "-v")
	}
	args = append(args, reach...)
	if c.Identity != "" {
		args = append(args, "-i", c.Identity)
	}
	if c.Certificate != "" {
		args = append(args, "-o", "CertificateFile="+c.Certificate)
	}
	if c.HostKeyAlias != "" {
		args = append(args, "-o", "HostKeyAlias="+c.HostKeyAlias)
	}
	for _, o := range c.Options {
		args = append(args, "-o", o)
	}
	only := "yes"
	if c.Agent != "" {
		only = "no"
		args = append(args, "-o", "IdentityAgent="+c.Agent)
	}
	return append(args, "-o", "IdentitiesOnly="+only, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking="+strict, "-o", "UserKnownHostsFile="+known,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30",
		user+"@127.0.0.1", command)
}

// Args is the ssh command line that logs in as c says.
func (s *Server) Args(c Client) []string { return c.Args(s.Port) }

// RetryFor bounds how long SSH retries a connection sshd's re-exec refused.
const RetryFor = 2 * time.Minute

// SSH runs the real ssh client as c says and returns its combined output
// and error. A connection refused, or closed before sshd sent its version
// (sshd re-executing itself on a reload), is tried again for up to
// RetryFor; any other outcome — a login, a refusal — is the answer.
func (s *Server) SSH(ctx context.Context, c Client) (string, error) {
	return ssh(ctx, s.Port, c, s.done)
}

// SSH is Server.SSH for an sshd the harness did not start, listening (or
// about to) on 127.0.0.1:port: until it accepts the connection, for up to
// RetryFor, ssh is run again.
func SSH(ctx context.Context, port int, c Client) (string, error) {
	return ssh(ctx, port, c, nil)
}

// ssh runs ssh until it reaches sshd, ctx is done, RetryFor has passed or
// exited is closed.
func ssh(ctx context.Context, port int, c Client, exited <-chan struct{}) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, RetryFor)
	defer cancel()
	for {
		out, err := exec.Command("ssh", c.Args(port)...).CombinedOutput()
		if err == nil || !notConnected(string(out)) {
			return string(out), err
		}
		select {
		case <-ctx.Done():
			return string(out), fmt.Errorf("%w (sshd on 127.0.0.1:%d not accepting connections for %v)", err, port, RetryFor)
		case <-exited:
			return string(out), fmt.Errorf("%w (sshd exited)", err)
		case <-time.After(50 * time.Millisecond): // nothing to wait on but the port
		}
	}
}

// notConnected says whether ssh's output shows it never reached sshd's
// version exchange: what a client sees while sshd re-executes itself.
func notConnected(out string) bool {
	return strings.Contains(out, "Connection refused") ||
		strings.Contains(out, "kex_exchange_identification: ") // reset or closed before sshd's banner
}

// FreePort returns a TCP port on 127.0.0.1 nobody listens on now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sshdrun: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Keygen makes an ECDSA key pair at path and path.pub with ssh-keygen.
func Keygen(path string) error {
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "", "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen -f %s: %v: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// HostCertSerial finds, in ssh -v output, the serial of the host
// certificate the server presented ("Server host certificate: … serial N").
func HostCertSerial(out string) (uint64, error) {
	for line := range strings.Lines(out) {
		_, rest, ok := strings.Cut(line, "Server host certificate: ")
		if !ok {
			continue
		}
		_, after, ok := strings.Cut(rest, " serial ")
		if !ok {
			continue
		}
		if f := strings.Fields(after); len(f) > 0 {
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, errors.New("no host certificate in ssh's output")
}

// Tail is the last n lines of sshd's log, for error messages.
func (s *Server) Tail(n int) string { return tail(s.Log, n) }

func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\nsshd's log " + file + " ends:\n" + strings.Join(lines, "\n")
}
