package sshagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"
)

// Serve accepts connections on ln and answers the agent protocol on each
// (agent.ServeAgent) whose peer is an allowed user; it closes others. When
// ctx ends it closes ln, stops reading from its connections (a request
// being answered still gets its answer) and returns once every connection
// has ended, with nil. It returns an error if accepting fails otherwise.
//
// sshd holds its agent connection for the whole SSH session (it signs
// again at every rekey); a session whose connection Serve closed fails at
// its next rekey.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	shut := false
	shutdown := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		shut = true
		for c := range conns {
			closeRead(c)
		}
	}
	stop := context.AfterFunc(ctx, shutdown)
	defer func() {
		stop()
		shutdown()
		wg.Wait()
	}()
	var delay time.Duration // back-off on temporary accept errors
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				a.log.Error("sshagent: accept", "listener", ln.Addr().String(), "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("sshagent: accepting on %s: %w", ln.Addr(), err)
		}
		delay = 0
		uid, pid, err := peer(c)
		if err == nil && !slices.Contains(a.allow, uid) {
			err = fmt.Errorf("user %d is not allowed (allowed: %v)", uid, a.allow)
		}
		if err != nil {
			a.peersRefused.Add(1)
			a.log.Warn("sshagent: connection refused", "listener", ln.Addr().String(), "uid", uid, "pid", pid, "err", err)
			c.Close()
			continue
		}
		a.connections.Add(1)
		mu.Lock()
		if shut {
			closeRead(c)
		}
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			agent.ServeAgent(a, c) // ends with the connection: EOF, or a malformed request
		})
	}
}

// shutdownGrace bounds how long a stopping Serve waits for a client to
// read the answer it is being written: one that never reads would
// otherwise hold Serve, and the daemon's stop or reload, forever.
const shutdownGrace = 10 * time.Second

// closeRead ends c's reading side: ServeAgent finishes the request it is
// answering (its answer written within shutdownGrace), then reads EOF.
func closeRead(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(shutdownGrace))
	if cr, ok := c.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	c.Close()
}

// peer returns the user and process IDs of c's peer (SO_PEERCRED), or an
// error if c is no Unix socket or the kernel does not say. The IDs are -1
// when unknown.
func peer(c net.Conn) (uid, pid int, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, -1, fmt.Errorf("a %T is not a Unix socket: its peer is unknown", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, -1, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, -1, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return -1, -1, fmt.Errorf("peer credentials (SO_PEERCRED): %w", credErr)
	}
	return int(cred.Uid), int(cred.Pid), nil
}

// Listen listens on a Unix socket at path, mode 0600, for Serve. It makes
// path's directory (mode 0700) if it is missing. A socket left at path by an
// agent that is gone (nothing answers on it) is replaced; anything else at
// path is refused: a file that is not a socket, or a socket another agent
// answers on. The socket is removed when the listener is closed.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sshagent: %w", err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("sshagent: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		return nil, fmt.Errorf("sshagent: %s exists and is not a socket (%v): not replacing it", path, fi.Mode().Type())
	default:
		c, err := net.DialTimeout("unix", path, 10*time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("sshagent: another agent is listening on %s", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("sshagent: checking the socket left at %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("sshagent: removing the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("sshagent: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("sshagent: %w", err)
	}
	return ln, nil
}

// ActivatedListener returns the listening Unix socket systemd passed
// (LISTEN_FDS, LISTEN_PID; the unit's .socket), or nil if it passed none.
// More than one, or one that is not a listening Unix stream socket, is an
// error. It unsets systemd's variables, so children do not see them.
//
// With a .socket unit, systemd holds the socket while the daemon restarts:
// a client's connection waits in the socket's queue, and is answered once
// the daemon is back.
func ActivatedListener() (net.Listener, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) > 1 {
		return nil, fmt.Errorf("sshagent: systemd passed %d sockets; want one", len(files))
	}
	ln, err := net.FileListener(files[0])
	if err != nil {
		return nil, fmt.Errorf("sshagent: the socket systemd passed (%s) is no listening socket: %w", files[0].Name(), err)
	}
	if _, ok := ln.(*net.UnixListener); !ok {
		ln.Close()
		return nil, fmt.Errorf("sshagent: the socket systemd passed is %s %s, not a Unix socket", ln.Addr().Network(), ln.Addr())
	}
	return ln, nil
}
