package hostd

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Task names: the task label of devid_task_last_success_seconds and
// devid_task_last_failure_seconds, the keys of the status file's "tasks",
// and the task attribute of their log lines. They are the names of the
// first releases, kept so that alert rules and scripts go on working.
const (
	TaskHostCert = "hostcert" // HostCertificate
	TaskUserCA   = "userca"   // TrustedUserCAKeys
	// TaskKnownHosts keeps devid-agent's known_hosts (host CA keys).
	TaskKnownHosts = "knownhosts"
	TaskWatch      = "watch" // Watch
	TaskKRL        = "krl"   // RevokedKeys
)

// TaskStatus is a task's last success and failure.
type TaskStatus struct {
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	LastFailure time.Time `json:"lastFailure,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
}

// health is one task's record of its successes and failures: its status,
// its two gauges, and its log line for a failure. Each task owns one.
type health struct {
	log     *slog.Logger
	now     func() time.Time
	changed func()

	success, failure prometheus.Gauge

	mu sync.Mutex
	st TaskStatus
}

// taskVecs registers (or finds) the per-task gauges on reg.
func taskVecs(reg prometheus.Registerer) (success, failure *prometheus.GaugeVec) {
	success = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "devid_task_last_success_seconds",
		Help: "Last success of each task, Unix time."}, []string{"task"}))
	failure = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "devid_task_last_failure_seconds",
		Help: "Last failure of each task, Unix time."}, []string{"task"}))
	return success, failure
}

// forgetTask removes the per-task series of a task that no longer runs (a
// configuration reloaded without it), so that no alert fires on its last
// values.
func forgetTask(reg prometheus.Registerer, task string) {
	success, failure := taskVecs(reg)
	success.DeleteLabelValues(task)
	failure.DeleteLabelValues(task)
}

// newHealth registers (or finds, when a configuration is reloaded) the
// per-task gauges on o.Registerer and returns the record of task, which
// calls o.Changed after every change. o has its defaults.
func newHealth(task string, o TaskOptions) *health {
	success, failure := taskVecs(o.Registerer)
	changed := o.Changed
	if changed == nil {
		changed = func() {}
	}
	return &health{log: o.Log, now: o.Now, changed: changed,
		success: success.WithLabelValues(task), failure: failure.WithLabelValues(task)}
}

// ok records a success.
func (h *health) ok() {
	now := h.now()
	h.success.Set(float64(now.Unix()))
	h.mu.Lock()
	h.st.LastSuccess = now
	h.mu.Unlock()
	h.changed()
}

// fail records and logs a failure.
func (h *health) fail(err error) {
	now := h.now()
	h.failure.Set(float64(now.Unix()))
	h.log.Error("task failed", "err", err)
	h.mu.Lock()
	h.st.LastFailure, h.st.LastError = now, err.Error()
	h.mu.Unlock()
	h.changed()
}

func (h *health) status() TaskStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

// register registers c on reg, or returns the collector of the same
// description registered before (a task of an earlier configuration), so
// that counters go on counting across configuration reloads. Any other
// failure is a programming error (two metrics of one name and different
// shapes), and panics, as MustRegister does.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}

func gauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

func counter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// counterVec registers a counter with one label, its values in values
// exported from the start (at 0).
func counterVec(reg prometheus.Registerer, name, help, label string, values ...string) *prometheus.CounterVec {
	c := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
	for _, v := range values {
		c.WithLabelValues(v)
	}
	return c
}

// wallClock is the time tasks record and decide with: the wall clock,
// without a monotonic reading (see package renew).
func wallClock() time.Time { return time.Now().Round(0) }

// TaskOptions are what every task is given besides its own configuration.
type TaskOptions struct {
	// Now is the wall clock; default time.Now without its monotonic
	// reading.
	Now func() time.Time
	// Registerer takes the task's metrics; default a private registry.
	Registerer prometheus.Registerer
	// Log is the task's logger; default discards.
	Log *slog.Logger
	// Changed, if set, is called after every change of the task's Status.
	Changed func()
}

func (o TaskOptions) withDefaults() TaskOptions {
	if o.Now == nil {
		o.Now = wallClock
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}
