package caserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/devid-ssh/devid/internal/buildinfo/buildmetrics"
	"github.com/devid-ssh/devid/issuance"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/revocation"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/webhook"
	"golang.org/x/crypto/ssh"
)

// Metrics are devid-ca's Prometheus metrics, on a registry of their own
// (never the global one), served on Config.MetricsAddress. Every name
// starts with devid_ca_ but devid_build_info{program="devid-ca"}
// (buildmetrics); times are Unix seconds. The table in the README
// ("Metrics" of devid-ca) lists them all; MetricNames returns their names.
//
// They are fed from where things happen: step-ca's authority.Meter (what
// step-ca signs), devid's issuance policy (issuance.Observer: what it
// refuses, and why), the Attestation CA (attestca.Observer), the HTTP
// handler (latency by chi route pattern), the store (errors), and, at each
// scrape, the revocation store and the CA's own certificates.
type Metrics struct {
	reg *prometheus.Registry

	issued        *prometheus.CounterVec
	refused       *prometheus.CounterVec
	attestations  prometheus.Counter
	attestRefused *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	state         *stateCollector
	notify        *notifyMetrics // pgreplica.go
}

func newMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devid_ca_certificates_issued_total",
			Help: "Certificates step-ca signed, by type (ssh, x509) and kind (host, user: SSH; device: X.509 device certificates).",
		}, []string{"type", "kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devid_ca_certificates_refused_total",
			Help: "Certificate requests refused, by type (ssh, x509), kind (host, user, device, other, unknown) and reason (devid's issuance policy's, or step_ca when step-ca refused to sign after accepting the token). A token step-ca refuses shows only in the request codes of devid_ca_http_request_duration_seconds.",
		}, []string{"type", "kind", "reason"}),
		attestations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devid_ca_attestations_total",
			Help: "TPM attestations that ended with an AK certificate.",
		}),
		attestRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devid_ca_attestation_refusals_total",
			Help: "Attestation requests refused (or failed), by step (attest, secret) and reason.",
		}, []string{"step", "reason"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "devid_ca_http_request_duration_seconds",
			Help: "HTTPS requests' duration, by route pattern (chi's: /ssh/sign, /devid/v1/*; none when no route was reached), method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or other) and status code. KRL long-polls last up to their wait.",
			// Past the KRL's long-polls: 55 s by default, up to 5m.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"route", "method", "code"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devid_ca_store_errors_total",
			Help: "Store operations that failed (not-found answers aside), by operation: devid's tables and ACME's, and health (the watchdog's check).",
		}, []string{"op"}),
		state:  newStateCollector(),
		notify: newNotifyMetrics(),
	}
	m.reg.MustRegister(m.collectors()...)
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.issued, m.refused, m.attestations, m.attestRefused, m.httpDuration, m.storeErrors, m.state,
		buildmetrics.Collector("devid-ca")}, m.notify.collectors()...)
}

// Registry is the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// MetricNames lists the names of every metric devid-ca exports: for checks
// that alert rules and dashboards name only metrics that exist.
func MetricNames() []string {
	var names []string
	for _, c := range newMetrics().collectors() {
		descs := make(chan *prometheus.Desc)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			if n := fqName.FindStringSubmatch(d.String()); n != nil {
				names = append(names, n[1])
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Refused implements issuance.Observer.
func (m *Metrics) Refused(certType, kind, reason string) {
	m.refused.WithLabelValues(certType, kind, reason).Inc()
}

// attestObserver is the attestca.Observer of the metrics.
type attestObserver struct{ m *Metrics }

func (o attestObserver) Certified() { o.m.attestations.Inc() }
func (o attestObserver) Refused(step, reason string) {
	o.m.attestRefused.WithLabelValues(step, reason).Inc()
}

// meter is step-ca's authority.Meter: what step-ca signs. A refusal of
// devid's issuance policy reaches step-ca as a *webhook.Error and was
// counted by the policy, with its reason; any other failure is step-ca's
// own (a bad or expired token, a validity the provisioner does not allow),
// counted with reason step_ca.
type meter struct{ m *Metrics }

var _ authority.Meter = meter{}

func (mt meter) ssh(c *ssh.Certificate, err error) {
	if err != nil {
		mt.failed("ssh", issuance.KindUnknown, err)
		return
	}
	kind := issuance.KindUser
	if c.CertType == ssh.HostCert {
		kind = issuance.KindHost
	}
	mt.m.issued.WithLabelValues("ssh", kind).Inc()
}

func (mt meter) x509(err error) {
	if err != nil {
		mt.failed("x509", issuance.KindDevice, err)
		return
	}
	mt.m.issued.WithLabelValues("x509", issuance.KindDevice).Inc()
}

func (mt meter) failed(certType, kind string, err error) {
	var we *webhook.Error
	if errors.As(err, &we) {
		return // the policy's: counted there
	}
	mt.m.refused.WithLabelValues(certType, kind, "step_ca").Inc()
}

func (mt meter) X509Signed(_ []*x509.Certificate, _ provisioner.Interface, err error)  { mt.x509(err) }
func (mt meter) X509Renewed(_ []*x509.Certificate, _ provisioner.Interface, err error) { mt.x509(err) }
func (mt meter) X509Rekeyed(_ []*x509.Certificate, _ provisioner.Interface, err error) { mt.x509(err) }
func (mt meter) SSHSigned(c *ssh.Certificate, _ provisioner.Interface, err error)      { mt.ssh(c, err) }
func (mt meter) SSHRenewed(c *ssh.Certificate, _ provisioner.Interface, err error)     { mt.ssh(c, err) }
func (mt meter) SSHRekeyed(c *ssh.Certificate, _ provisioner.Interface, err error)     { mt.ssh(c, err) }
func (meter) X509WebhookAuthorized(provisioner.Interface, error)                       {}
func (meter) X509WebhookEnriched(provisioner.Interface, error)                         {}
func (meter) SSHWebhookAuthorized(provisioner.Interface, error)                        {}
func (meter) SSHWebhookEnriched(provisioner.Interface, error)                          {}
func (meter) KMSSigned(error)                                                          {}

// stateCollector reads, at each scrape, the KRL served and the CA's own
// certificates. Its sources are set once the server is built.
type stateCollector struct {
	krlVersion, krlBytes, krlEntries, krlGenerated, krlRebuild, krlBehind, krlWaiting, certNotAfter *prometheus.Desc

	mu      sync.Mutex
	krl     krlSource                                            // nil until set
	certs   map[string]*x509.Certificate                         // by label; nil until set
	tls     func(*tls.ClientHelloInfo) (*tls.Certificate, error) // the HTTPS certificate; nil until set
	entries struct {                                             // the KRL's entries, by version (parsed once)
		version uint64
		n       int
	}
}

// newStateCollector makes the collector with its descriptions.
func newStateCollector() *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &stateCollector{}
	c.krlVersion = d("devid_ca_krl_version", "Version of the KRL served (GET /devid/v1/krl).")
	c.krlBytes = d("devid_ca_krl_bytes", "Size of the KRL served, in bytes.")
	c.krlEntries = d("devid_ca_krl_entries", "Entries in the KRL served: revoked key IDs (a device's is in the host and the user CA's sections) and serials.")
	c.krlGenerated = d("devid_ca_krl_generated_seconds", "When the KRL served was generated (it changes only when what is revoked changes).")
	c.krlRebuild = d("devid_ca_krl_last_rebuild_seconds",
		"When this devid-ca last rebuilt the KRL successfully (on every change, and every 10 minutes); 0: never since it started.")
	c.krlBehind = d("devid_ca_krl_behind", "1 while the last KRL rebuild failed, so a revocation may not be published yet.")
	c.krlWaiting = d("devid_ca_krl_waiting_clients", "KRL long-polls (hosts' devid-hostd, devid-agent) waiting for a newer version.")
	c.certNotAfter = d("devid_ca_certificate_not_after_seconds",
		"When each of the CA's own certificates expires: root, intermediate, tls (the HTTPS certificate, renewed by devid-ca), attestation (the Attestation CA), admin_root. SSH CA keys have no expiry.",
		"certificate")
	return c
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.krlVersion, c.krlBytes, c.krlEntries, c.krlGenerated, c.krlRebuild, c.krlBehind, c.krlWaiting, c.certNotAfter} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.krl != nil {
		p, st := c.krl.Current(), c.krl.Stats()
		if p != nil {
			gauge(c.krlVersion, float64(p.Version))
			gauge(c.krlBytes, float64(len(p.Body)))
			gauge(c.krlEntries, float64(c.countEntries(p)))
			gauge(c.krlGenerated, unixSeconds(p.Generated))
		}
		gauge(c.krlRebuild, unixSeconds(st.LastRebuild))
		gauge(c.krlBehind, boolValue(st.Behind))
		gauge(c.krlWaiting, float64(st.Waiting))
	}
	for name, cert := range c.certs {
		if cert != nil {
			gauge(c.certNotAfter, unixSeconds(cert.NotAfter), name)
		}
	}
	if c.tls != nil {
		if crt, err := c.tls(nil); err == nil && len(crt.Certificate) > 0 {
			leaf := crt.Leaf
			if leaf == nil {
				leaf, _ = x509.ParseCertificate(crt.Certificate[0])
			}
			if leaf != nil {
				gauge(c.certNotAfter, unixSeconds(leaf.NotAfter), "tls")
			}
		}
	}
}

// krlSource is what the collector reads of the revocation store.
type krlSource interface {
	Current() *revocation.Published
	Stats() revocation.Stats
}

// setSources sets what the collector reads: the revocation store and the
// CA's certificates, by label.
func (c *stateCollector) setSources(krl krlSource, certs map[string]*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.krl, c.certs = krl, certs
}

// setTLS sets where the collector reads the HTTPS certificate, renewed
// as it goes.
func (c *stateCollector) setTLS(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tls = get
}

// countEntries counts p's entries, parsing each version once.
func (c *stateCollector) countEntries(p *revocation.Published) int {
	if c.entries.version == p.Version && p.Version != 0 {
		return c.entries.n
	}
	n := 0
	if k, err := krl.Parse(p.Body); err == nil {
		for _, s := range k.Certs {
			n += len(s.KeyIDs) + int(s.Serials.Count())
		}
		n += len(k.RevokedKeys) + len(k.SHA1) + len(k.SHA256)
	}
	c.entries.version, c.entries.n = p.Version, n
	return n
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// statusCode is an HTTP status as a label value.
func statusCode(code int) string {
	if code == 0 {
		code = 200
	}
	return strconv.Itoa(code)
}
