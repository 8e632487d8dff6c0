package caserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/devid-ssh/devid/internal/task"
)

// krlRebuildEvery is how often the KRL is rebuilt with nothing changed, so
// that entries that can only match expired certificates are pruned as time
// passes, not only on changes.
const krlRebuildEvery = 10 * time.Minute

// shutdownTimeout bounds a graceful stop: requests still running then are
// cut off.
const shutdownTimeout = 10 * time.Second

// tasks are what Serve runs, each logging with task=NAME:
//
//   - https: the HTTPS server on ln. A failure is fatal (the listener is
//     gone): Serve returns it.
//   - krl-rebuild: rebuilds the KRL every krlRebuildEvery.
//   - krl-watch: serves the KRLs other devid-ca instances sharing the
//     database publish (revocation.Store.Watch).
func (s *Server) tasks(ln net.Listener, tc *tls.Config, ready func()) []task.Task {
	return []task.Task{
		&httpsTask{s: s, log: s.log.With("task", "https"), ln: ln, tc: tc, ready: ready},
		task.Func("krl-rebuild", func(ctx context.Context) error {
			return s.rebuildKRL(ctx, s.log.With("task", "krl-rebuild"))
		}),
		task.Func("krl-watch", s.revoke.Watch),
	}
}

// httpsTask serves HTTPS on a listener until ctx is done, then shuts the
// server down gracefully.
type httpsTask struct {
	s     *Server
	log   *slog.Logger
	ln    net.Listener
	tc    *tls.Config
	ready func() // called once the listener serves; nil for none
}

func (h *httpsTask) Name() string { return "https" }

func (h *httpsTask) Run(ctx context.Context) error {
	s := h.s
	srv := &http.Server{
		// Requests see ctx end at shutdown, so long-polls (the KRL) return
		// instead of holding up a graceful stop.
		BaseContext: func(net.Listener) context.Context { return ctx },
		Handler:     s.handler,
		TLSConfig:   h.tc,
		// The handshake and headers have HeaderTimeout; a body has
		// BodyTimeout (limitBody), counted from the end of the headers.
		// WriteTimeout counts from the request to the end of the answer,
		// so it must outlast the longest KRL long-poll.
		ReadHeaderTimeout: s.cfg.Limits.HeaderTimeout.Duration,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       s.cfg.Limits.IdleTimeout.Duration,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(h.ln, h.tc)) }() // http.Server's own loop; ends with Shutdown
	h.log.Info("devid-ca serving", "address", h.ln.Addr().String(), "dnsNames", s.cfg.DNSNames,
		"root_fingerprint", Fingerprint(s.root))
	if h.ready != nil {
		h.ready()
	}
	select {
	case err := <-errc:
		// Serve closed the listener: running it again cannot help.
		return task.Fatal(fmt.Errorf("devid-ca: serve: %w", err))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("devid-ca: shutdown: %w", err)
	}
	return nil
}

// rebuildKRL rebuilds the KRL every krlRebuildEvery until ctx is done. A
// failed rebuild is logged and the previous KRL still served; the next tick
// tries again.
func (s *Server) rebuildKRL(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(krlRebuildEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := s.revoke.Rebuild(); err != nil {
				log.Error("KRL rebuild failed; the previous KRL is still served", "err", err)
			}
		}
	}
}
