package sshdrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Inetd is sshd in inetd mode: a config and host key in a directory, and a
// new `sshd -i` for every connection, speaking SSH on its standard input and
// output and exiting when the connection ends. There is no port to find, no
// daemon to wait for or stop, no reload; every connection reads the config
// and the files it names afresh. All connections log, by -E, to one file.
//
// Connections: [Inetd.Dial] starts sshd on one end of a socketpair and
// returns the other, for a client of the caller's (golang.org/x/crypto/ssh);
// [Inetd.SSH] runs the real ssh client with sshd as its ProxyCommand, the
// way OpenSSH's own regression tests reach sshd.
//
// What works without root (tried with OpenSSH 9.2p1 on Debian 12;
// TestInetdAsUser checks the first two points): sshd run as root needs its
// privilege separation directory /run/sshd (NewInetd makes it) and refuses
// to start without it ("Missing privilege separation directory"). Run as
// any other user, it neither chroots nor changes user to separate
// privileges, needs neither /run/sshd nor root, and can then:
//
//   - let in the account it runs as, and no other (it cannot change user:
//     another account's login, root's too, is "Permission denied"); the
//     account must not be locked (UsePAM is off);
//   - check keys and certificates: AuthorizedKeysFile (with StrictModes no,
//     as sshdtest writes it, for files in a temporary directory),
//     TrustedUserCAKeys, RevokedKeys;
//   - run an AuthorizedPrincipalsCommand only as that same user
//     (AuthorizedPrincipalsCommandUser naming another fails: "failed, status
//     1"), and only one that is root-owned in root-owned directories no one
//     else may write, as always ("Unsafe AuthorizedPrincipalsCommand … bad
//     ownership or modes" otherwise): something a user other than root cannot
//     install, so such tests still need root (see InstallCommand).
//
// Run as root, an sshd in inetd mode decides every login as the daemon does.
type Inetd struct {
	Dir     string // its files
	Config  string // sshd_config
	HostKey string // private host key; .pub beside it
	Log     string // the log of every connection's sshd (-E)
}

// NewInetd writes sshd_config (and, if o.HostKey is empty, a host key) in
// o.Dir for sshd -i. It starts nothing: each connection does.
func NewInetd(o Options) (*Inetd, error) {
	if o.Dir == "" {
		return nil, errors.New("sshdrun: no directory")
	}
	if o.LogLevel == "" {
		o.LogLevel = "DEBUG"
	}
	if !slices.Contains(logLevels, o.LogLevel) {
		return nil, fmt.Errorf("sshdrun: LogLevel %s hides sshd's INFO lines", o.LogLevel)
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(privsepDir, 0o755); err != nil {
			return nil, fmt.Errorf("sshdrun: %w", err)
		}
	}
	hostKey, err := hostKey(o)
	if err != nil {
		return nil, err
	}
	s := &Inetd{Dir: o.Dir, Config: filepath.Join(o.Dir, "sshd_config"), HostKey: hostKey, Log: filepath.Join(o.Dir, "sshd.log")}
	config := strings.Join(baseLines(hostKey, o), "\n") + "\n"
	if err := os.WriteFile(s.Config, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("sshdrun: %w", err)
	}
	return s, nil
}

// Command is the command line of one connection's sshd.
func (s *Inetd) Command() []string {
	return []string{SSHD, "-i", "-f", s.Config, "-E", s.Log}
}

// Args is the ssh command line that logs in as c says, through a new
// sshd -i as its ProxyCommand.
func (s *Inetd) Args(c Client) []string {
	quoted := make([]string, 0, 6)
	for _, a := range s.Command() {
		quoted = append(quoted, proxyQuote(a))
	}
	return c.args("-o", "ProxyCommand="+strings.Join(quoted, " "))
}

// proxyQuote quotes a word of a ProxyCommand, which ssh expands (%h, %p, …)
// and then runs with the user's shell.
func proxyQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SSH runs the real ssh client as c says, through a new sshd -i, and
// returns its combined output and error: a login, or a refusal. There is
// nothing to retry: no reload, no port.
func (s *Inetd) SSH(ctx context.Context, c Client) (string, error) {
	out, err := exec.CommandContext(ctx, "ssh", s.Args(c)...).CombinedOutput()
	return string(out), err
}

// connExit bounds how long Close waits for a connection's sshd to exit
// once the connection is closed before killing it: a bound on a hang only.
const connExit = time.Minute

// Dial starts an sshd for one connection on one end of a socketpair, and
// returns the other end: the server side of an SSH connection, for a
// client such as golang.org/x/crypto/ssh's NewClientConn. Closing it ends
// that sshd; Close returns once sshd has exited.
func (s *Inetd) Dial() (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sshdrun: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "sshd -i "+s.Config)
	theirs := os.NewFile(uintptr(fds[1]), "sshd -i stdio")
	// What sshd says before it opens its log goes to the log too.
	log, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, fmt.Errorf("sshdrun: %w", err)
	}
	argv := s.Command()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = theirs, theirs, log
	err = cmd.Start()
	theirs.Close() // sshd holds its copies
	log.Close()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("sshdrun: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	conn, err := net.FileConn(ours)
	ours.Close() // conn holds its own descriptor
	if err != nil {
		cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("sshdrun: %w", err)
	}
	return &inetdConn{Conn: conn, cmd: cmd, done: done}, nil
}

// inetdConn is a connection to one sshd -i.
type inetdConn struct {
	net.Conn
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
	err  error
}

// Close closes the connection and waits for its sshd to exit (killing it
// after connExit).
func (c *inetdConn) Close() error {
	c.once.Do(func() {
		c.err = c.Conn.Close()
		select {
		case <-c.done:
		case <-time.After(connExit):
			c.cmd.Process.Kill()
			<-c.done
			c.err = errors.Join(c.err, fmt.Errorf("sshdrun: %s did not exit within %v of its connection closing; killed", c.cmd, connExit))
		}
	})
	return c.err
}
