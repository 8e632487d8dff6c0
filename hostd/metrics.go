package hostd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Version is devid-hostd's version, set by the build.
var Version = "dev"

// Metrics are devid-hostd's Prometheus metrics, on a private registry.
// Times are Unix seconds; 0 means never.
type Metrics struct {
	Registry *prometheus.Registry

	CertNotBefore, CertNotAfter, NextRenewal prometheus.Gauge
	DeviceCertNotAfter                       prometheus.Gauge
	Renewals                                 *prometheus.CounterVec // result
	Attestations                             *prometheus.CounterVec // result
	SSHDReloads                              *prometheus.CounterVec // result
	LastSuccess, LastFailure                 *prometheus.GaugeVec   // task
	UserCAKeys, UserCAKeysChanged            prometheus.Gauge
	FilesRestored                            *prometheus.CounterVec // file
	KRLVersion, KRLGenerated                 prometheus.Gauge
	KRLFetchFailures, KRLEarlyAnswers        prometheus.Counter
}

// Task names, the task label of the per-task metrics.
const (
	TaskHostCert = "hostcert"
	TaskUserCA   = "userca"
	TaskWatch    = "watch"
	TaskKRL      = "krl"
)

// NewMetrics registers devid-hostd's metrics on a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	f := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "devid_" + name, Help: help})
		r.MustRegister(g)
		return g
	}
	cv := func(name, help, label string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "devid_" + name, Help: help}, []string{label})
		r.MustRegister(c)
		return c
	}
	gv := func(name, help, label string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "devid_" + name, Help: help}, []string{label})
		r.MustRegister(g)
		return g
	}
	m := &Metrics{
		Registry:           r,
		CertNotBefore:      f("host_certificate_not_before_seconds", "Start of the host certificate's validity, Unix time."),
		CertNotAfter:       f("host_certificate_not_after_seconds", "End of the host certificate's validity, Unix time."),
		NextRenewal:        f("host_certificate_next_renewal_seconds", "When the host certificate is due for renewal, Unix time."),
		DeviceCertNotAfter: f("device_certificate_not_after_seconds", "End of the device certificate's validity, Unix time."),
		Renewals:           cv("renewals_total", "Host certificate renewals, by result.", "result"),
		Attestations:       cv("attestations_total", "TPM attestations, by result.", "result"),
		SSHDReloads:        cv("sshd_reloads_total", "sshd reloads, by result (check_failed: sshd -t refused the new files).", "result"),
		LastSuccess:        gv("task_last_success_seconds", "Last success of each task, Unix time.", "task"),
		LastFailure:        gv("task_last_failure_seconds", "Last failure of each task, Unix time.", "task"),
		UserCAKeys:         f("user_ca_keys", "User CA keys in TrustedUserCAKeys."),
		UserCAKeysChanged:  f("user_ca_keys_last_change_seconds", "Last change of TrustedUserCAKeys, Unix time."),
		FilesRestored:      cv("files_restored_total", "Managed files put back after someone else changed or deleted them.", "file"),
		KRLVersion:         f("krl_version", "Version of the KRL in RevokedKeys."),
		KRLGenerated:       f("krl_generated_seconds", "When the CA built the KRL in RevokedKeys, Unix time (its age: time() minus this)."),
	}
	m.KRLFetchFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "devid_krl_fetch_failures_total", Help: "Failed KRL fetches (unreachable CA, bad signature, older version, undecodable KRL)."})
	m.KRLEarlyAnswers = prometheus.NewCounter(prometheus.CounterOpts{Name: "devid_krl_early_answers_total",
		Help: "KRL long-polls answered 304 at once instead of being held (a CA or load balancer not holding the request); each backs off."})
	r.MustRegister(m.KRLFetchFailures, m.KRLEarlyAnswers)
	for _, res := range []string{"success", "failure"} {
		m.Renewals.WithLabelValues(res)
		m.Attestations.WithLabelValues(res)
		m.SSHDReloads.WithLabelValues(res)
	}
	m.SSHDReloads.WithLabelValues("check_failed")
	for _, t := range []string{TaskHostCert, TaskUserCA, TaskWatch, TaskKRL} {
		m.LastSuccess.WithLabelValues(t)
		m.LastFailure.WithLabelValues(t)
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "devid_build_info", Help: "devid-hostd's version."}, []string{"version", "goversion"})
	info.WithLabelValues(Version, runtime.Version()).Set(1)
	r.MustRegister(info)
	return m
}

// ServeMetrics serves /metrics on addr until ctx is done. ready is called
// once the listener is bound.
func ServeMetrics(ctx context.Context, addr string, m *Metrics, log *slog.Logger, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr())
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
