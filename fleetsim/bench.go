package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/krldist"
)

// Options configure a run. Zero fields take the defaults of DefaultOptions.
type Options struct {
	Hosts        int     // simulated devices
	Workstations float64 // fraction of them that are workstations (SSH user certificates)
	Replicas     int     // devid-ca serve processes: 2 on PostgreSQL, 1 on bbolt
	DB           string  // "postgresql" or "bbolt"
	// PostgresDSN is a PostgreSQL server's connection string, for a role
	// that may create databases; the bench makes two and drops them.
	PostgresDSN string
	DevidCA     string // devid-ca binary
	StepCA      string // stock step-ca binary
	Dir         string // work directory, made if missing (default: a new one under /dev/shm or the temp dir)
	Keep        bool   // keep Dir
	// Day is what 24 hours become: the host certificate lifetime; every
	// other time of the hosts (user certificates' 16 h, the back-off of
	// renew.Policy, the outage) is divided by the same factor.
	Day time.Duration
	// Concurrency and ThroughputTime are figure 1's: workers, and time per
	// CA (in two rounds each, alternating).
	Concurrency    int
	ThroughputTime time.Duration
	SwTPMs         int           // swtpms attesting in a loop
	AttestEvery    time.Duration // each swtpm attests at most once every AttestEvery
	Quarantines    int           // devices quarantined, one after another, in the revocation figure
	Steady         time.Duration // steady phase after the warm-up (default: one host renewal cycle)
	Recovery       time.Duration // time measured after the outage (default: half a host renewal cycle)
	KRLWait        time.Duration // the hosts' long-poll wait (devid-hostd's: 55 s)
	Log            *slog.Logger
}

// DefaultOptions are the full run's: 10,000 devices, 24 h in 4 minutes.
func DefaultOptions() Options {
	return Options{Hosts: 10000, Workstations: 0.1, Replicas: 2, DB: "postgresql",
		PostgresDSN: "host=/var/run/postgresql dbname=postgres sslmode=disable",
		Day:         4 * time.Minute, Concurrency: 8, ThroughputTime: 20 * time.Second, SwTPMs: 3, AttestEvery: time.Second, Quarantines: 5,
		KRLWait: 55 * time.Second}
}

func (o *Options) check() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if o.Hosts < 10 {
		bad("--hosts %d: at least 10", o.Hosts)
	}
	if o.Workstations < 0 || o.Workstations > 1 {
		bad("--workstations %v: a fraction in [0, 1]", o.Workstations)
	}
	switch o.DB {
	case "postgresql":
		if o.Replicas < 1 || o.Replicas > 8 {
			bad("--replicas %d: 1 to 8", o.Replicas)
		}
		if o.PostgresDSN == "" {
			bad("--postgres: a connection string is needed with --db postgresql")
		}
	case "bbolt":
		if o.Replicas != 1 {
			bad("--replicas %d: bbolt is one process's file: --replicas 1", o.Replicas)
		}
	default:
		bad("--db %q: postgresql or bbolt", o.DB)
	}
	for _, b := range []struct{ flag, path string }{{"--devid-ca", o.DevidCA}, {"--step-ca", o.StepCA}} {
		if b.path == "" {
			bad("%s is required", b.flag)
		} else if fi, err := os.Stat(b.path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			bad("%s %s: not an executable file", b.flag, b.path)
		}
	}
	if o.Day < 30*time.Second || o.Day > 24*time.Hour {
		bad("--day %s: from 30s to 24h", o.Day)
	}
	if o.Concurrency < 1 {
		bad("--concurrency %d: at least 1", o.Concurrency)
	}
	if o.ThroughputTime < time.Second {
		bad("--throughput-time %s: at least 1s", o.ThroughputTime)
	}
	if o.SwTPMs < 1 || o.SwTPMs > 8 {
		bad("--swtpms %d: 1 to 8", o.SwTPMs)
	}
	if o.AttestEvery < 0 || o.AttestEvery > time.Minute {
		bad("--attest-every %s: from 0 to 1m", o.AttestEvery)
	}
	if o.Quarantines < 1 || o.Quarantines > o.Hosts/2 {
		bad("--quarantines %d: 1 to half the hosts", o.Quarantines)
	}
	if o.KRLWait < 2*time.Second || o.KRLWait > 5*time.Minute {
		bad("--krl-wait %s: from 2s to 5m", o.KRLWait)
	}
	return errors.Join(errs...)
}

// Result is every figure of a run: what --json prints.
type Result struct {
	Started    time.Time         `json:"started"`
	Config     Config            `json:"config"`
	Notes      []string          `json:"notes"`
	Issuance   IssuanceFigure    `json:"issuance_throughput"`
	Renewals   RenewalFigure     `json:"renewals"`
	Revocation RevocationFigure  `json:"revocation"`
	Outage     OutageFigure      `json:"outage"`
	Resources  ResourcesFigure   `json:"resources"`
	Goals      map[string]bool   `json:"goals_met"`
	Logs       map[string]string `json:"logs,omitempty"`
}

// Config is what the run was.
type Config struct {
	Hosts        int     `json:"hosts"`
	Workstations int     `json:"workstations"`
	Replicas     int     `json:"replicas"`
	DB           string  `json:"db"`
	Day          string  `json:"day"`
	Compression  float64 `json:"compression"`
	Concurrency  int     `json:"concurrency"`
	SwTPMs       int     `json:"swtpms"`
	AttestEvery  string  `json:"attest_every"`
	KRLWait      string  `json:"krl_wait"`
	Dir          string  `json:"dir,omitempty"`
	// LoadAvg is the machine's 1-minute load average at the start and at
	// the end: other work on the machine weighs on every figure.
	LoadAvg [2]float64 `json:"loadavg"`
}

// IssuanceFigure is figure 1.
type IssuanceFigure struct {
	Devid *Throughput `json:"devid"`
	Step  *Throughput `json:"stepca"`
	Ratio float64     `json:"ratio"` // devid / step-ca, certificates per second
	// CPURatio is step-ca's CPU per certificate over devid-ca's: the
	// throughput ratio if the CA process were alone on the CPUs.
	CPURatio float64 `json:"cpu_ratio"`
}

// RenewalFigure is figure 2: latencies while the fleet renews.
type RenewalFigure struct {
	Window              float64 `json:"window_s"`
	RatePerSecond       float64 `json:"issuance_rate_per_s"`
	Issuance            Summary `json:"issuance_latency"`
	IssuanceFailed      int     `json:"issuance_failed"`
	Attestation         Summary `json:"attestation_latency"`
	AttestationFailed   int     `json:"attestation_failed"`
	AttestationFirstErr string  `json:"attestation_first_error,omitempty"`
	AttestsByReplica    []int   `json:"attestations_by_replica"`
}

// RevocationFigure is figure 3. Each latency is from the admin request
// that quarantined a device to a host: Delivered when the CA's answer
// with that KRL version (or newer) reached the host, Latency when the
// host had checked its signature, decoded it and written sshd's file.
// The second adds each host's own work, which the bench does for all
// the hosts on the CPUs the CAs use.
type RevocationFigure struct {
	Events             int       `json:"events"`
	Hosts              int       `json:"hosts"`
	Delivered          Summary   `json:"delivered"`
	DeliveredByReplica []Summary `json:"delivered_by_replica"`
	Latency            Summary   `json:"latency"` // installed
	ByReplica          []Summary `json:"by_replica"`
	Missed             int       `json:"missed"` // host × event pairs not installed
	Versions           []uint64  `json:"versions"`
	// Issuance is the latency of the fleet's renewals while the
	// revocations were fanned out (not in figure 2's).
	Issuance Summary `json:"issuance_latency"`
	// HostCPU is the bench process's CPU time per KRL installed by a
	// host during the figure (TLS, signature check, decoding, file
	// write, the next long-poll): the simulated hosts' share of the
	// machine.
	HostCPU float64 `json:"host_cpu_ms_per_install"`
	Error   string  `json:"error,omitempty"` // why the figure is missing
}

// OutageFigure is figure 4. Rates are per second, over windows of
// WindowSeconds (10 minutes, compressed) sliding through the steady
// period and the recovery after the outage. A ratio is the busiest window
// after the outage over the busiest steady window, as hostd's
// TestOutageStorm compares them; the *_to_mean ratios are over the
// steady mean instead, which even a steady period's own busiest window
// exceeds.
type OutageFigure struct {
	OutageSeconds        float64 `json:"outage_s"`
	WindowSeconds        float64 `json:"window_s"`
	SteadyRenewalRate    float64 `json:"steady_renewal_rate"`
	SteadyPeakRenewal    float64 `json:"steady_peak_renewal_rate"`
	AfterPeakRenewalRate float64 `json:"after_peak_renewal_rate"`
	RenewalRatio         float64 `json:"renewal_ratio"`
	RenewalRatioToMean   float64 `json:"renewal_ratio_to_mean"`
	FailedDuringOutage   int     `json:"failed_during_outage"`
	// The KRL long-poll's wait and back-off are not compressed: after
	// an outage of OutageSeconds of real time, hosts come back within
	// seconds, where after a real hour they would take up to the
	// back-off's 2 minutes (TestOutageStorm).
	SteadyKRLRate     float64 `json:"steady_krl_rate"`
	SteadyPeakKRLRate float64 `json:"steady_peak_krl_rate"`
	AfterPeakKRLRate  float64 `json:"after_peak_krl_rate"`
	KRLRatio          float64 `json:"krl_ratio"`
	KRLRatioToMean    float64 `json:"krl_ratio_to_mean"`
}

// ResourcesFigure is figure 5, each replica's process with every host
// long-polling.
type ResourcesFigure struct {
	LongPolls int         `json:"long_polls"`
	Replicas  []ProcStats `json:"replicas"`
	StepCA    ProcStats   `json:"stepca"`
}

// Run sets everything up, measures, and tears it down.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = discard()
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	var err error
	if o.Dir == "" {
		base := os.TempDir()
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
		if o.Dir, err = os.MkdirTemp(base, "devid-bench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if !o.Keep {
		defer os.RemoveAll(o.Dir)
	}
	k := float64(24*time.Hour) / float64(o.Day)
	res := &Result{Started: time.Now().UTC(), Goals: map[string]bool{}}
	res.Config = Config{Hosts: o.Hosts, Workstations: int(float64(o.Hosts) * o.Workstations), Replicas: o.Replicas, DB: o.DB,
		Day: o.Day.String(), Compression: k, Concurrency: o.Concurrency, SwTPMs: o.SwTPMs, AttestEvery: o.AttestEvery.String(), KRLWait: o.KRLWait.String()}
	if o.Keep {
		res.Config.Dir = o.Dir
	}
	res.Config.LoadAvg[0] = loadAvg()
	defer func() { res.Config.LoadAvg[1] = loadAvg() }()
	res.Notes = []string{
		"simulated devices have no TPM: their device certificates are minted by the bench with the CA directory's intermediate key (what ACME device-attest-01 would issue); their renewals are the SSH-certificate step of a real enrolment (enroll.Client.SSHCertificate through hostd.HostCertificate), without attestation or ACME",
		"attestation is measured with real swtpms (enroll.Client.Attest), timing the two HTTP requests only",
		"the outage is a SIGKILL of every replica; time is compressed by the factor in config.compression (24h certificates last config.day)",
	}
	log := o.Log
	log.Info("setting up", "dir", o.Dir, "hosts", o.Hosts, "db", o.DB, "replicas", o.Replicas)
	e, err := setup(ctx, &o)
	if e != nil {
		defer e.close()
	}
	if err != nil {
		return nil, err
	}
	res.Logs = map[string]string{"stepca": e.stepca.log}
	for i, r := range e.replicas {
		res.Logs[fmt.Sprintf("replica%d", i+1)] = r.log
	}

	// Figure 1.
	log.Info("figure 1: issuance throughput", "concurrency", o.Concurrency, "time", o.ThroughputTime)
	var signers []*signer
	for _, d := range e.devices {
		if d.kind == "host" && len(signers) < 64 {
			s, err := e.newSigner(d)
			if err != nil {
				return nil, err
			}
			signers = append(signers, s)
		}
	}
	if err := e.issuanceFigure(ctx, res, signers); err != nil {
		return nil, err
	}
	log.Info("figure 1", "devid", res.Issuance.Devid.PerSecond, "stepca", res.Issuance.Step.PerSecond)

	// Figures 2 to 5: the fleet.
	pool, err := e.newAttestPool(o.SwTPMs)
	defer pool.close()
	if err != nil {
		return nil, err
	}
	f, err := e.newFleet()
	if err != nil {
		return nil, err
	}
	// The warm-up is one renewal cycle of a host certificate: every
	// device has had its first certificate, and renews at a steady rate.
	period := cycle(o.Day)
	steady, recovery := o.Steady, o.Recovery
	if steady <= 0 {
		steady = period
	}
	if recovery <= 0 {
		recovery = period / 2
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitFleet, err := f.run(fctx, filepath.Join(o.Dir, "hosts"), k, period, cycle(userLifetime(k)), o.KRLWait)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	attWG := pool.run(fctx, e, o.AttestEvery)
	log.Info("fleet started: warm-up", "period", period)
	steadyFrom := t0.Add(period)
	if err := sleepUntil(ctx, steadyFrom.Add(steady)); err != nil {
		return nil, err
	}
	steadyTo := time.Now()
	e.resourcesFigure(res)
	att, attFailed := pool.lat.summary(t0, steadyTo)
	attFirstErr, attByReplica := pool.counts()
	iss, issFailed := f.issuances.summary(steadyFrom, steadyTo)
	res.Renewals = RenewalFigure{Window: steadyTo.Sub(steadyFrom).Seconds(), RatePerSecond: f.attempts.Rate(steadyFrom, steadyTo),
		Issuance: iss, IssuanceFailed: issFailed, Attestation: att, AttestationFailed: attFailed + pool.errs.Count(t0, steadyTo),
		AttestationFirstErr: attFirstErr, AttestsByReplica: attByReplica}
	log.Info("figure 2", "issuance", iss, "attestation", att)

	// Figure 3, after figure 2's window: the bench's own work for 10,000
	// hosts installing a KRL at once would otherwise weigh on figure 2.
	log.Info("figure 3: revocation")
	revFrom, cpu0 := time.Now(), selfCPU()
	if err := e.revocationFigure(ctx, f, res); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// The other figures are still worth having: this one says why
		// it has none.
		res.Revocation.Error = err.Error()
		log.Error("figure 3", "err", err)
	}
	res.Revocation.Issuance, _ = f.issuances.summary(revFrom, time.Now())
	if n := res.Revocation.Latency.Count; n > 0 {
		res.Revocation.HostCPU = (selfCPU() - cpu0).Seconds() * 1000 / float64(n)
	}
	log.Info("figure 3", "delivered", res.Revocation.Delivered, "installed", res.Revocation.Latency)

	// Figure 4.
	outage := time.Duration(float64(time.Hour) / k)
	w := max(time.Second, time.Duration(float64(10*time.Minute)/k))
	log.Info("figure 4: outage", "outage", outage)
	down := time.Now()
	for _, r := range e.replicas {
		r.cmd.Process.Kill()
		<-r.done
		r.cmd = nil
	}
	if err := sleepUntil(ctx, down.Add(outage)); err != nil {
		return nil, err
	}
	for _, r := range e.replicas {
		if err := r.start(ctx, e.ca.roots); err != nil {
			return nil, err
		}
	}
	up := time.Now()
	if err := sleepUntil(ctx, up.Add(recovery)); err != nil {
		return nil, err
	}
	end := time.Now()
	of := OutageFigure{OutageSeconds: up.Sub(down).Seconds(), WindowSeconds: w.Seconds(),
		SteadyRenewalRate: f.attempts.Rate(steadyFrom, steadyTo), SteadyPeakRenewal: f.attempts.PeakRate(steadyFrom, steadyTo, w),
		AfterPeakRenewalRate: f.attempts.PeakRate(up, end, w), FailedDuringOutage: f.failures.Count(down, up),
		SteadyKRLRate: f.krlReqs.Rate(steadyFrom, steadyTo), SteadyPeakKRLRate: f.krlReqs.PeakRate(steadyFrom, steadyTo, w),
		AfterPeakKRLRate: f.krlReqs.PeakRate(up, end, w)}
	ratio := func(a, b float64) float64 {
		if b > 0 {
			return a / b
		}
		return 0
	}
	of.RenewalRatio = ratio(of.AfterPeakRenewalRate, of.SteadyPeakRenewal)
	of.RenewalRatioToMean = ratio(of.AfterPeakRenewalRate, of.SteadyRenewalRate)
	of.KRLRatio = ratio(of.AfterPeakKRLRate, of.SteadyPeakKRLRate)
	of.KRLRatioToMean = ratio(of.AfterPeakKRLRate, of.SteadyKRLRate)
	res.Outage = of
	cancel()
	attWG.Wait()
	waitFleet()

	res.Goals["issuance_ratio_ge_0.9"] = res.Issuance.Ratio >= 0.9
	res.Goals["issuance_p99_lt_200ms"] = iss.Count > 0 && iss.P99 < 200
	res.Goals["attestation_p99_lt_200ms"] = att.Count > 0 && att.P99 < 200
	rv := res.Revocation
	res.Goals["revocation_p99_le_2s"] = rv.Delivered.Count > 0 && rv.Delivered.P99 <= 2000 && rv.Missed == 0
	res.Goals["revocation_installed_p99_le_2s"] = rv.Latency.Count > 0 && rv.Latency.P99 <= 2000 && rv.Missed == 0
	res.Goals["outage_ratio_lt_2"] = of.RenewalRatio > 0 && of.RenewalRatio < 2
	return res, nil
}

// issuanceFigure runs devid (replica 1) and step-ca in turn, twice each,
// after a short warm-up of each.
func (e *env) issuanceFigure(ctx context.Context, res *Result, signers []*signer) error {
	o := e.o
	cas := []*server{e.replicas[0], e.stepca}
	var sums [2]*Throughput
	for round := range 3 {
		for i, ca := range cas {
			d := o.ThroughputTime / 2
			if round == 0 {
				d = min(time.Second, d) // warm-up, not counted
			}
			t, err := e.throughput(ctx, ca, signers, o.Concurrency, d)
			if err != nil {
				return err
			}
			if round == 0 {
				continue
			}
			if sums[i] == nil {
				sums[i] = t
				continue
			}
			s := sums[i]
			s.Issued += t.Issued
			s.Errors += t.Errors
			s.Seconds += t.Seconds
			s.PerSecond = float64(s.Issued) / s.Seconds
			s.CPUSeconds += t.CPUSeconds
			s.CPUPerCert = s.CPUSeconds * 1000 / float64(max(1, s.Issued))
			s.Latency = mergeSummary(s.Latency, t.Latency)
			if s.FirstError == "" {
				s.FirstError = t.FirstError
			}
		}
	}
	res.Issuance = IssuanceFigure{Devid: sums[0], Step: sums[1]}
	if sums[1].PerSecond > 0 {
		res.Issuance.Ratio = sums[0].PerSecond / sums[1].PerSecond
	}
	if sums[0].CPUPerCert > 0 {
		res.Issuance.CPURatio = sums[1].CPUPerCert / sums[0].CPUPerCert
	}
	return nil
}

// mergeSummary approximates the summary of two runs: weighted quantiles,
// the larger max.
func mergeSummary(a, b Summary) Summary {
	n := a.Count + b.Count
	if n == 0 {
		return a
	}
	w := func(x, y float64) float64 { return (x*float64(a.Count) + y*float64(b.Count)) / float64(n) }
	return Summary{Count: n, P50: w(a.P50, b.P50), P99: w(a.P99, b.P99), Max: max(a.Max, b.Max)}
}

// revocationFigure quarantines devices one after another through replica
// 1's admin API and times, for every host, the arrival of a KRL of the
// version that quarantine made, on whichever replica it long-polls.
func (e *env) revocationFigure(ctx context.Context, f *fleet, res *Result) error {
	o := e.o
	hc := e.keepAliveClient(1)
	defer hc.CloseIdleConnections()
	type event struct {
		t0 time.Time
		v  uint64
	}
	var evs []event
	for q := range o.Quarantines {
		h := f.hosts[len(f.hosts)-1-q] // hosts, not the workstations at the start
		d := h.s.dev
		h.quarantined.Store(true)
		var t0 time.Time
		var err error
		// A retry, at most four times, on a new connection: the admin
		// client's kept-alive
		// connection may have been closed by the CA while idle, and a
		// POST is not retried by net/http. Setting a status twice is
		// harmless; the time counts from the attempt that succeeded.
		for try := 0; try < 5; try++ {
			admin := e.admin
			if try > 0 { // a new connection
				if admin, err = e.newAdminClient(); err != nil {
					return err
				}
			}
			t0 = time.Now()
			var ae *adminapi.APIError
			if _, err = admin.SetStatus(d.name, adminapi.StatusQuarantined, "devid-bench revocation figure"); err == nil || errors.As(err, &ae) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("fleetsim: quarantining %s: %w", d.name, err)
		}
		var k *krldist.Signed
		for try := 0; try < 5; try++ {
			if k, err = krldist.Fetch(ctx, hc, e.replicas[0].URL(), 0, 0); err == nil {
				break
			}
			hc.CloseIdleConnections()
		}
		if err != nil {
			return fmt.Errorf("fleetsim: KRL version after quarantining %s: %w", d.name, err)
		}
		evs = append(evs, event{t0, k.Version})
		res.Revocation.Versions = append(res.Revocation.Versions, k.Version)
		if err := sleepUntil(ctx, t0.Add(3*time.Second)); err != nil {
			return err
		}
	}
	// Wait (bounded) for every host to have the last version.
	last := evs[len(evs)-1].v
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, h := range f.hosts {
			if _, ok := h.installedAt(last); !ok {
				all = false
				break
			}
		}
		if all {
			break
		}
		if err := sleepUntil(ctx, time.Now().Add(100*time.Millisecond)); err != nil {
			return err
		}
	}
	rv := &res.Revocation
	rv.Events, rv.Hosts = len(evs), len(f.hosts)
	for _, at := range []struct {
		at  func(*fleetHost, uint64) (time.Time, bool)
		all *Summary
		by  *[]Summary
	}{{(*fleetHost).installedAt, &rv.Latency, &rv.ByReplica}, {(*fleetHost).deliveredAt, &rv.Delivered, &rv.DeliveredByReplica}} {
		var all []time.Duration
		by := make([][]time.Duration, len(e.replicas))
		for _, ev := range evs {
			for _, h := range f.hosts {
				t, ok := at.at(h, ev.v)
				if !ok {
					if at.all == &rv.Latency {
						rv.Missed++
					}
					continue
				}
				d := t.Sub(ev.t0)
				all = append(all, d)
				by[h.replica] = append(by[h.replica], d)
			}
		}
		*at.all = summarize(all)
		for _, b := range by {
			*at.by = append(*at.by, summarize(b))
		}
	}
	return nil
}

// resourcesFigure reads each replica's /proc with the fleet long-polling.
func (e *env) resourcesFigure(res *Result) {
	res.Resources.LongPolls = e.o.Hosts
	for _, r := range e.replicas {
		st, err := procStats(r.pid(), r.port())
		if err != nil {
			e.log.Warn("reading /proc", "server", r.name, "err", err)
		}
		res.Resources.Replicas = append(res.Resources.Replicas, st)
	}
	st, _ := procStats(e.stepca.pid(), e.stepca.port())
	res.Resources.StepCA = st
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
