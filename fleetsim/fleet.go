package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// fleet is the simulated hosts and workstations, each running devid-hostd's
// own tasks: hostd.HostCertificate (devid-agent's, for a workstation's user
// certificate) with the real renew.Policy, and hostd.RevokedKeys, the
// KRL long-poll. Host i talks to replica i mod the number of replicas.
type fleet struct {
	e     *env
	hosts []*fleetHost

	issuances timedLatencies // every issuance attempt: its start, its duration
	attempts  Events         // every issuance attempt (success or failure)
	failures  Events
	refused   Events // attempts of quarantined hosts
	krlReqs   Events // every KRL request sent
}

type fleetHost struct {
	s       *signer
	replica int
	// quarantined: the revocation figure quarantined this host; its
	// refused renewals are counted apart (refused), not as the fleet's.
	quarantined atomic.Bool
	mu          sync.Mutex
	krls        []install // KRL versions installed, in order
	// delivered: KRL versions the CA answered with, when the answer
	// reached the host's socket (rx; the time it was read if the kernel
	// gave none): before the host's own work (signature check, decoding,
	// the file write), which a real host does on its own CPU and the
	// bench does for every host on the same CPUs as the CAs.
	delivered []install
	rx        atomic.Int64 // kernel receive time of the KRL connection's newest data (rxConn)
}

type install struct {
	v uint64
	t time.Time
}

// installedAt is when the host first installed a KRL of version v or
// newer, and whether it has.
func (h *fleetHost) installedAt(v uint64) (time.Time, bool) { return h.first(&h.krls, v) }

// deliveredAt is when the CA's answer with a KRL of version v or newer
// first reached the host, and whether one has.
func (h *fleetHost) deliveredAt(v uint64) (time.Time, bool) { return h.first(&h.delivered, v) }

// first is the time of the first of *list (read under h.mu) with version
// v or newer.
func (h *fleetHost) first(list *[]install, v uint64) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, in := range *list {
		if in.v >= v {
			return in.t, true
		}
	}
	return time.Time{}, false
}

// softIssuer is the hostd.Issuer of a simulated host: the SSH certificate
// step of enroll.Client (an X5C token signed by the device key, POST
// /1.0/ssh/sign), with the device certificate the bench minted. A real host
// attests its TPM and runs ACME device-attest-01 first, at every renewal.
type softIssuer struct {
	f   *fleet
	h   *fleetHost
	cl  *enroll.Client
	s   *signer
	typ string
}

func (si *softIssuer) Issue(ctx context.Context, key ssh.PublicKey, principals []string) (*hostd.Issued, error) {
	t0 := time.Now()
	if si.h.quarantined.Load() {
		si.f.refused.Add(t0)
		return nil, errors.New("fleetsim: quarantined (not asking the CA: this host's refusals would weigh on the fleet's figures)")
	}
	si.f.attempts.Add(t0)
	cert, err := si.cl.SSHCertificate(ctx, si.s.dc, si.typ, principals, key)
	si.f.issuances.add(t0, time.Since(t0), err == nil)
	if err != nil {
		si.f.failures.Add(time.Now())
		return nil, err
	}
	return &hostd.Issued{Cert: cert, DeviceCertNotAfter: si.s.dc.Chain[0].NotAfter}, nil
}

// nopRegisterer takes metrics and keeps none: 20,000 tasks' private
// registries would only cost the bench memory.
type nopRegisterer struct{}

func (nopRegisterer) Register(prometheus.Collector) error  { return nil }
func (nopRegisterer) MustRegister(...prometheus.Collector) {}
func (nopRegisterer) Unregister(prometheus.Collector) bool { return true }

// countingTransport records every KRL request sent, and every KRL
// answer's arrival (its version header) on the host.
type countingTransport struct {
	base http.RoundTripper
	ev   *Events
	h    *fleetHost
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.ev.Add(time.Now())
	resp, err := c.base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusOK {
		if v, perr := strconv.ParseUint(resp.Header.Get(krldist.HeaderVersion), 10, 64); perr == nil {
			// The answer's receive time in the kernel; the response has
			// been read, so it is the newest data on the connection.
			t := time.Now()
			if rx := c.h.rx.Load(); rx > 0 {
				t = time.Unix(0, rx)
			}
			c.h.mu.Lock()
			c.h.delivered = append(c.h.delivered, install{v, t})
			c.h.mu.Unlock()
		}
	}
	return resp, err
}

// newFleet makes the hosts' signers (device keys and certificates).
func (e *env) newFleet() (*fleet, error) {
	f := &fleet{e: e}
	for _, d := range e.devices {
		s, err := e.newSigner(d)
		if err != nil {
			return nil, err
		}
		f.hosts = append(f.hosts, &fleetHost{s: s, replica: d.i % len(e.replicas)})
	}
	return f, nil
}

// policy is hostd's renewal policy with time compressed k times: renewal
// at 2/3 of the lifetime with 5% jitter (unchanged, they are fractions),
// the failure back-off from 5 s to 5 min divided by k.
func policy(k float64) renew.Policy {
	return renew.Policy{
		MinBackoff: time.Duration(float64(renew.DefaultMinBackoff) / k),
		MaxBackoff: time.Duration(float64(renew.DefaultMaxBackoff) / k),
	}
}

// userLifetime is a workstation's SSH user certificate lifetime, 16 hours
// compressed k times (host certificates last Options.Day).
func userLifetime(k float64) time.Duration { return time.Duration(float64(16*time.Hour) / k) }

// cycle is the mean time from one renewal to the next of a certificate
// lasting lifetime: hostd renews at renew.Policy's Fraction of the
// lifetime counted from the issuance, minus a random part of Jitter.
// A fleet whose devices start at uniform times over their cycle renews
// at a steady rate from the first cycle on; started over any other span,
// its rate swells where one round of renewals overlaps the next.
func cycle(lifetime time.Duration) time.Duration {
	return time.Duration(float64(lifetime) * (renew.DefaultFraction - renew.DefaultJitter/2))
}

// run starts every host's tasks, each at a uniform random time within
// its certificate's cycle (hostCycle for hosts, userCycle for
// workstations), and returns when ctx is done and every task has
// returned.
func (f *fleet) run(ctx context.Context, dir string, k float64, hostCycle, userCycle time.Duration, krlWait time.Duration) (wait func(), err error) {
	clients := make([]*enroll.Client, len(f.e.replicas))
	for i, r := range f.e.replicas {
		clients[i] = enroll.New(r.URL(), f.e.ca.roots, discard())
		// A fresh connection (a TLS handshake) per renewal, as a host that
		// renews once in hours has.
		clients[i].SetHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: f.e.keepAliveClient(0).Transport.(*http.Transport).TLSClientConfig, DisableKeepAlives: true,
		}})
	}
	pol := policy(k)
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	// Everything made first, the tasks started after: a host's
	// goroutines must not slow the making of the next.
	type tasks struct {
		hc     *hostd.HostCertificate
		rk     *hostd.RevokedKeys
		http   *http.Client
		spread time.Duration
	}
	all := make([]tasks, len(f.hosts))
	for i, h := range f.hosts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdir := filepath.Join(dir, fmt.Sprintf("%05d", i))
		if err := os.MkdirAll(hdir, 0o755); err != nil {
			return nil, err
		}
		files := hostd.NewFiles()
		opts := hostd.TaskOptions{Registerer: nopRegisterer{}, Log: discard()}
		certType := uint32(ssh.HostCert)
		if h.s.certType() == "user" {
			certType = ssh.UserCert
		}
		hc := hostd.NewHostCertificate(hostd.HostCertificateConfig{
			File: filepath.Join(hdir, "cert.pub"), CertType: certType, Key: h.s.pub,
			Issuer: &softIssuer{f: f, h: h, cl: clients[h.replica], s: h.s, typ: h.s.certType()},
			Files:  files, Policy: pol, TaskOptions: opts,
		})
		http1 := hostd.NewHTTPClient(f.e.ca.roots)
		http1.Timeout = 0 // as devid-hostd: the long-poll's wait bounds it
		http1.Transport.(*http.Transport).DialContext = dialRX(&h.rx)
		http1.Transport = countingTransport{base: http1.Transport, ev: &f.krlReqs, h: h}
		keys := &hostd.CAKeys{}
		keys.Set([]ssh.PublicKey{f.e.ca.userCA})
		rk := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{
			CAURL: f.e.replicas[h.replica].URL(), HTTP: http1, File: filepath.Join(hdir, "revoked_keys"), Files: files,
			CAKeys: keys, Wait: krlWait, TaskOptions: opts,
			Installed: func(k *krl.KRL) {
				h.mu.Lock()
				h.krls = append(h.krls, install{k.Version, time.Now()})
				h.mu.Unlock()
			},
		})
		if err := rk.Prepare(); err != nil {
			return nil, err
		}
		spread := hostCycle
		if certType == ssh.UserCert {
			spread = userCycle
		}
		all[i] = tasks{hc, rk, http1, spread}
	}
	var wg sync.WaitGroup
	for _, t := range all {
		offset := time.Duration(rand.Float64() * float64(t.spread))
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(offset):
			}
			var tw sync.WaitGroup
			tw.Add(2)
			go func() { defer tw.Done(); t.hc.Run(ctx) }()
			go func() { defer tw.Done(); t.rk.Run(ctx) }()
			tw.Wait()
			t.http.CloseIdleConnections()
		}()
	}
	return wg.Wait, nil
}

// timedLatencies are durations with their start times.
type timedLatencies struct {
	mu sync.Mutex
	at []time.Time
	d  []time.Duration
	ok []bool
}

func (l *timedLatencies) add(at time.Time, d time.Duration, ok bool) {
	l.mu.Lock()
	l.at, l.d, l.ok = append(l.at, at), append(l.d, d), append(l.ok, ok)
	l.mu.Unlock()
}

// summary of the successful ones started in [from, to), and the number
// that failed.
func (l *timedLatencies) summary(from, to time.Time) (Summary, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d []time.Duration
	failed := 0
	for i, t := range l.at {
		if t.Before(from) || !t.Before(to) {
			continue
		}
		if l.ok[i] {
			d = append(d, l.d[i])
		} else {
			failed++
		}
	}
	return summarize(d), failed
}
