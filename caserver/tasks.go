package caserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/devid-ssh/devid/attestca"
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
//   - krl-rebuild: rebuilds the KRL every krlRebuildEvery, and within
//     seconds while a failed rebuild left a change unpublished.
//   - krl-watch: serves the KRLs other devid-ca instances sharing the
//     database publish (revocation.Store.Watch).
//   - krl-notify: on PostgreSQL, listens for other replicas' KRLs
//     (pgreplica.go), waking krl-watch.
//   - krl-catchup: on PostgreSQL, rebuilds the KRL a second after any
//     replica's change to what it revokes (pgreplica.go).
//   - quarantine-lift: activates the devices whose temporary quarantine
//     ended (see liftQuarantines).
//   - attest-prune: deletes the expired pending attestations every
//     attestca.PruneEvery (attestca.CA.PruneLoop).
//   - metrics: /metrics on o.Metrics, if set (metricsTask). A failure is
//     fatal, as for https.
//   - watchdog: o.Watchdog with Healthy, if set.
//
// o.Ready is called once https and metrics both serve.
func (s *Server) tasks(o ServeOptions, tc *tls.Config) []task.Task {
	ready := o.Ready
	if ready != nil && o.Metrics != nil {
		ready = countdown(2, ready)
	}
	extra := s.replicaTasks()
	if o.Metrics != nil {
		extra = append(extra, &metricsTask{s: s, log: s.log.With("task", "metrics"), ln: o.Metrics, ready: ready})
	}
	if o.Watchdog != nil {
		log := s.log.With("task", "watchdog")
		extra = append(extra, task.Func("watchdog", func(ctx context.Context) error {
			o.Watchdog(ctx, log, s.Healthy)
			return ctx.Err()
		}))
	}
	return append([]task.Task{
		&httpsTask{s: s, log: s.log.With("task", "https"), ln: o.HTTPS, tc: tc, ready: ready},
		task.Func("krl-rebuild", func(ctx context.Context) error {
			return rebuildKRL(ctx, s.revoke, s.log.With("task", "krl-rebuild"), krlRebuildEvery)
		}),
		task.Func("krl-watch", s.revoke.Watch),
		task.Func("quarantine-lift", func(ctx context.Context) error {
			return liftQuarantines(ctx, s.inv, s.now, s.log.With("task", "quarantine-lift"), quarantinePoll)
		}),
		task.Func("attest-prune", func(ctx context.Context) error { return s.attest.PruneLoop(ctx, attestca.PruneEvery) }),
	}, extra...)
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

// krlRebuilder is what the krl-rebuild task needs of the revocation store.
type krlRebuilder interface {
	Rebuild() error
	// Behind reports that the last rebuild failed: a committed change may
	// not be in the KRL served.
	Behind() bool
}

// rebuildKRL rebuilds the KRL every `every` until ctx is done, and, while
// the store is Behind (a rebuild failed, here or after a change, so a
// revocation may not be published yet), within a second and then after 1 s
// doubling to a minute until one succeeds. A failed rebuild is logged and
// the previous KRL still served.
func rebuildKRL(ctx context.Context, r krlRebuilder, log *slog.Logger, every time.Duration) error {
	const minRetry, maxRetry = time.Second, time.Minute
	tick := time.NewTicker(time.Second) // how often Behind is looked at
	defer tick.Stop()
	last, failures := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		due := last.Add(every)
		if r.Behind() {
			due = last.Add(min(minRetry<<min(failures, 6), maxRetry))
		}
		if time.Now().Before(due) {
			continue
		}
		last = time.Now()
		if err := r.Rebuild(); err != nil {
			failures++
			log.Error("KRL rebuild failed; the previous KRL is still served", "err", err, "failures", failures)
			continue
		}
		if failures > 0 {
			log.Info("KRL rebuilt after failures", "failures", failures)
		}
		failures = 0
	}
}
