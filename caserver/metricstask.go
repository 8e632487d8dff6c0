package caserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/devid-ssh/devid/internal/task"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsTask serves the metrics registry at /metrics, in plain HTTP, on a
// listener of its own (Config.MetricsAddress), until ctx is done.
type metricsTask struct {
	s     *Server
	log   *slog.Logger
	ln    net.Listener
	ready func() // called once the listener serves; nil for none
}

func (m *metricsTask) Name() string { return "metrics" }

// Run serves until ctx is done. A server that stops by itself has lost its
// listener: that is fatal (task.Fatal), as for the HTTPS server, rather than
// run unwatched.
func (m *metricsTask) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: m.s.cfg.Limits.HeaderTimeout.Duration,
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(m.ln) }()
	m.log.Info("metrics serving", "address", m.ln.Addr().String(), "path", "/metrics")
	if m.ready != nil {
		m.ready()
	}
	select {
	case err := <-errc:
		return task.Fatal(fmt.Errorf("devid-ca: metrics: %w", err))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("devid-ca: metrics shutdown: %w", err)
	}
	return nil
}

// countdown returns a function that calls f on its n-th call, once.
func countdown(n int, f func()) func() {
	var mu sync.Mutex
	return func() {
		mu.Lock()
		defer mu.Unlock()
		n--
		if n == 0 {
			f()
		}
	}
}

// healthKey is what Healthy reads: the KRL's head record (revocation), a
// small record every rebuild writes. Not found is an answer too.
var (
	healthTable = []byte("devid_krl")
	healthKey   = []byte("head")
)

// Healthy checks that the store answers: it reads a small record, within
// ctx. A failure counts as a store error (op health).
func (s *Server) Healthy(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		_, err := s.db.Get(healthTable, healthKey)
		if isNotFound(err) {
			err = nil
		}
		errc <- err
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = fmt.Errorf("the store did not answer: %w", ctx.Err())
	}
	if err != nil {
		s.metrics.storeErrors.WithLabelValues("health").Inc()
		return fmt.Errorf("devid-ca: store: %w", err)
	}
	return nil
}
