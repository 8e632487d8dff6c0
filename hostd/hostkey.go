package hostd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// hostKeyServer is the TPM host key, loaded, and the agent serving it to
// sshd. It outlives configurations that keep the TPM, the key file and the
// socket: a reload must not cut sshd's agent connections, which sshd keeps
// for a whole SSH session and needs again at every key re-exchange.
type hostKeyServer struct {
	tpmAddr TPMAddress
	keyFile string
	socket  string

	t      *tpm.TPM
	key    *tpm.ResidentKey
	pub    ssh.PublicKey
	cancel context.CancelFunc
	done   chan error // the agent's end: nil for a clean stop
}

func (h *hostKeyServer) residentKey() *tpm.ResidentKey {
	if h == nil {
		return nil
	}
	return h.key
}

func (h *hostKeyServer) tpm() *tpm.TPM {
	if h == nil {
		return nil
	}
	return h.t
}

// hostKeyServer returns the running host key server if cfg keeps it,
// else stops it and starts one for cfg: the TPM opened, the key loaded
// (made at the first start), served on the HostKeyAgent socket until the
// daemon stops (ctx) or a configuration changes them.
func (d *Daemon) hostKeyServer(ctx context.Context, cfg *Config, addr TPMAddress) (*hostKeyServer, error) {
	socket := cfg.HostKeyAgent
	if d.HostKeyListener != nil {
		socket = "" // systemd's, whatever the configuration says
	}
	if h := d.hostKeySrv; h != nil && h.tpmAddr == addr && h.keyFile == cfg.TPMHostKey && h.socket == socket {
		return h, nil
	}
	d.stopHostKeyServer()
	h := &hostKeyServer{tpmAddr: addr, keyFile: cfg.TPMHostKey, socket: socket, done: make(chan error, 1)}
	var err error
	if h.t, err = addr.Open(&tpm.Config{Logger: d.Log}); err != nil {
		return nil, err
	}
	var created bool
	if h.key, created, err = h.t.LoadOrCreateKeyFile(cfg.TPMHostKey, "devid-hostd host key"); err != nil {
		h.t.Close()
		return nil, fmt.Errorf("tpmHostKey: %w", err)
	}
	if h.pub, err = ssh.NewPublicKey(h.key.Public()); err != nil {
		h.close()
		return nil, err
	}
	l, err := d.hostKeyListener(cfg)
	if err != nil {
		h.close()
		return nil, err
	}
	log := d.Log.With("task", TaskHostKey)
	a := sshagent.New(sshagent.Static{{Signer: h.key, Comment: "devid-hostd TPM host key"}},
		sshagent.Options{Logger: log, AllowUIDs: []int{0, os.Getuid()}})
	actx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	go func() { h.done <- a.Serve(actx, l) }()
	d.hostKeySrv = h
	d.Log.Info("host key in the TPM, served to sshd", "key_file", cfg.TPMHostKey, "created", created,
		"fingerprint", ssh.FingerprintSHA256(h.pub), "socket", l.Addr().String())
	return h, nil
}

// stopHostKeyServer stops the host key server, if one runs, and closes
// the socket the daemon made for it.
func (d *Daemon) stopHostKeyServer() {
	h := d.hostKeySrv
	if h == nil {
		return
	}
	d.hostKeySrv = nil
	h.cancel()
	<-h.done
	h.done <- nil // for watchTask, should one still wait
	h.close()
	d.closeHostKeyListener()
}

func (h *hostKeyServer) close() {
	if h.key != nil {
		h.key.Close()
	}
	h.t.Close()
}

// watchTask is the task that stops the daemon if the agent fails (it
// could not accept on its socket): sshd would have no host key.
func (h *hostKeyServer) watchTask() task.Task {
	return task.Func(TaskHostKey, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-h.done:
			h.done <- err // for stopHostKeyServer
			if err != nil {
				return task.Fatal(fmt.Errorf("host key agent: %w", err))
			}
			return nil
		}
	})
}
