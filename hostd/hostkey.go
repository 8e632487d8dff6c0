package hostd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/devid-ssh/devid/sshagent"
	"github.com/devid-ssh/devid/tpm"
	"golang.org/x/crypto/ssh"
)

// TaskHostKey serves the TPM host key to sshd (HostKeyAgent).
const TaskHostKey = "hostkey"

// installHostKeyPublic writes the TPM host key's public half where sshd's
// HostKey expects it (path.pub), and makes sure no private key is at path:
// sshd would sign with that file instead of asking HostKeyAgent.
func installHostKeyPublic(path string, pub ssh.PublicKey) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("sshdHostKey %s: a file is there; with the host key in the TPM, sshd must find no private key at that path (move it away)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sshdHostKey: %w", err)
	}
	b := ssh.MarshalAuthorizedKey(pub)
	if cur, err := os.ReadFile(path + ".pub"); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path+".pub", b, 0o644)
}

// hostKeyListener returns the socket sshd's HostKeyAgent connects to: the
// one systemd passed (devid-hostd.socket), or one made at
// cfg.HostKeyAgent. It is made once and kept across configurations, so
// connections made during a reload wait instead of failing.
func (d *Daemon) hostKeyListener(cfg *Config) (net.Listener, error) {
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	if d.HostKeyListener != nil {
		return keepOpen(d.HostKeyListener)
	}
	if d.agentListener == nil || d.agentPath != cfg.HostKeyAgent {
		if d.agentListener != nil {
			d.agentListener.Close()
			d.agentListener = nil
		}
		l, err := sshagent.Listen(cfg.HostKeyAgent)
		if err != nil {
			return nil, fmt.Errorf("hostKeyAgent: %w", err)
		}
		d.agentListener, d.agentPath = l, cfg.HostKeyAgent
	}
	return keepOpen(d.agentListener)
}

// closeHostKeyListener closes the socket the daemon made, if any.
func (d *Daemon) closeHostKeyListener() {
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	if d.agentListener != nil {
		d.agentListener.Close()
		d.agentListener = nil
	}
}

// keepOpen returns l as a listener whose Close does not close the socket
// (the daemon keeps it across configurations) but ends a pending Accept,
// so the agent task stops; the next keepOpen serves it again.
func keepOpen(l net.Listener) (net.Listener, error) {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return nil, fmt.Errorf("hostKeyAgent: %s %s is not a unix socket", l.Addr().Network(), l.Addr())
	}
	if err := ul.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return kept{ul}, nil
}

type kept struct{ *net.UnixListener }

func (k kept) Close() error { return k.SetDeadline(time.Unix(1, 0)) }

// newHostKeyAgent is the task serving key to sshd on l. Only root (sshd)
// and the daemon's own user may connect.
func newHostKeyAgent(l net.Listener, key *tpm.ResidentKey, log *slog.Logger) task.Task {
	return task.Func(TaskHostKey, func(ctx context.Context) error {
		a := sshagent.New(sshagent.Static{{Signer: key, Comment: "devid-hostd TPM host key"}},
			sshagent.Options{Logger: log, AllowUIDs: []int{0, os.Getuid()}})
		err := a.Serve(ctx, l)
		if err != nil && ctx.Err() == nil {
			return task.Fatal(fmt.Errorf("host key agent: %w", err))
		}
		return nil
	})
}
