package hostd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/devid-ssh/devid/internal/buildinfo/buildmetrics"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a private registry holding devid_build_info
// (package buildmetrics). Each task registers its own metrics (prefix
// devid_) on it; times are Unix seconds, 0 meaning never.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(buildmetrics.Collector("devid-hostd"))
	return r
}

// MetricNames lists the names of every metric devid-hostd exports, with
// every task enabled: for checks that alert rules and dashboards name only
// metrics that exist.
func MetricNames() []string {
	rec := &descRecorder{}
	reg := prometheus.WrapRegistererWith(nil, rec)
	NewHostCertificate(HostCertificateConfig{TaskOptions: TaskOptions{Registerer: reg}})
	NewTrustedUserCAKeys(TrustedUserCAKeysConfig{TaskOptions: TaskOptions{Registerer: reg}})
	NewRevokedKeys(RevokedKeysConfig{TaskOptions: TaskOptions{Registerer: reg}})
	NewWatch(WatchConfig{TaskOptions: TaskOptions{Registerer: reg}})
	rec.Register(NewRegistry())
	slices.Sort(rec.names)
	return slices.Compact(rec.names)
}

// descRecorder is a Registerer that keeps the names of what is registered.
type descRecorder struct{ names []string }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	descs := make(chan *prometheus.Desc)
	go func() { c.Describe(descs); close(descs) }()
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names = append(r.names, m[1])
		}
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}

func (r *descRecorder) Unregister(prometheus.Collector) bool { return false }

// MetricsServer serves the registry at /metrics.
type MetricsServer struct {
	Addr     string
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// Ready, if set, is told the listener's address once it is bound.
	Ready func(net.Addr)
}

// Name is the task's name.
func (m *MetricsServer) Name() string { return "metrics" }

// Run serves until ctx is done. A listener that cannot be bound is fatal
// (task.Fatal): the daemon stops (systemd restarts it), rather than run
// unwatched.
func (m *MetricsServer) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", m.Addr)
	if err != nil {
		return task.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if m.Ready != nil {
		m.Ready(ln.Addr())
	}
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-ctx.Done():
		case <-served: // Serve failed: nothing to shut down
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
