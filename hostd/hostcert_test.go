package hostd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// serials numbers the fake issuers' certificates, unique in the test binary.
var serials atomic.Uint64

// fakeIssuer signs host certificates with its own CA key, valid from a
// minute before the request (as devid-ca backdates) for lifetime. down
// says, at each request, whether the CA is unreachable.
type fakeIssuer struct {
	ca       ssh.Signer
	lifetime time.Duration

	mu     sync.Mutex
	down   func(now time.Time) bool
	calls  []time.Time
	issued []*ssh.Certificate
}

func newFakeIssuer(t *testing.T, lifetime time.Duration) *fakeIssuer {
	return &fakeIssuer{ca: newSigner(t), lifetime: lifetime, down: func(time.Time) bool { return false }}
}

func (f *fakeIssuer) Issue(_ context.Context, key ssh.PublicKey, principals []string) (*hostd.Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.calls = append(f.calls, now)
	if f.down(now) {
		return nil, &enroll.StepError{Step: enroll.StepAttest, Err: errors.New("enroll: /attestation/attest: connection refused")}
	}
	c := &ssh.Certificate{Key: key, Serial: serials.Add(1), CertType: ssh.HostCert, KeyId: "device-id",
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(f.lifetime).Unix())}
	if err := c.SignCert(rand.Reader, f.ca); err != nil {
		return nil, err
	}
	f.issued = append(f.issued, c)
	return &hostd.Issued{Cert: c, DeviceCertNotAfter: now.Add(time.Hour)}, nil
}

func (f *fakeIssuer) history() ([]time.Time, []*ssh.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls), slices.Clone(f.issued)
}

// fakeSSHD records reloads; refuse says whether `sshd -t` refuses now.
type fakeSSHD struct {
	mu      sync.Mutex
	refuse  bool
	checks  int
	reloads int
}

func (s *fakeSSHD) Check(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks++
	if s.refuse {
		return errors.New("/usr/sbin/sshd -t: refused")
	}
	return nil
}

func (s *fakeSSHD) Reload(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloads++
	return nil
}

func (s *fakeSSHD) counts() (checks, reloads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checks, s.reloads
}

func hostKey(t *testing.T) ssh.PublicKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// hostCertTask is a HostCertificate task on fakes, its file in a new
// directory.
type hostCertTask struct {
	*hostd.HostCertificate
	issuer *fakeIssuer
	sshd   *fakeSSHD
	reg    *prometheus.Registry
	file   string
	files  *hostd.Files
}

func newHostCertTask(t *testing.T, dir string, lifetime time.Duration, draws ...float64) *hostCertTask {
	h := &hostCertTask{issuer: newFakeIssuer(t, lifetime), sshd: &fakeSSHD{}, reg: prometheus.NewRegistry(),
		file: filepath.Join(dir, "ssh_host_ecdsa_key-cert.pub"), files: hostd.NewFiles()}
	n := 0
	h.HostCertificate = hostd.NewHostCertificate(hostd.HostCertificateConfig{
		File: h.file, Key: hostKey(t), Principals: []string{"web-1.example.com"},
		Issuer: h.issuer, SSHD: h.sshd, Files: h.files, TaskOptions: hostd.TaskOptions{Registerer: h.reg},
		Rand: func() float64 {
			if len(draws) == 0 {
				return 0
			}
			n++
			return draws[(n-1)%len(draws)]
		},
	})
	return h
}

// installed returns the serial of the certificate in the file, 0 if none.
func (h *hostCertTask) installed(t *testing.T) uint64 {
	b, err := os.ReadFile(h.file)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatalf("%s: %v", h.file, err)
	}
	return k.(*ssh.Certificate).Serial
}

// TestHostCertificateRenewsAtTwoThirds: a host without a certificate gets
// one at once; each is renewed at 2/3 of its lifetime (the draw 0: no
// jitter), counted from its issue, installed, checked with sshd -t, sshd
// reloaded; the status and metrics name the certificate in place and its
// renewal time.
func TestHostCertificateRenewsAtTwoThirds(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		h := newHostCertTask(t, dir, 24*time.Hour)
		start := time.Now()
		runFor(t, 40*time.Hour, h.Run)
		calls, issued := h.issuer.history()
		want := []time.Duration{0, 16 * time.Hour, 32 * time.Hour}
		if len(calls) != len(want) {
			t.Fatalf("%d issuances in 40 hours of 24-hour certificates, want %d: %v", len(calls), len(want), calls)
		}
		for i, c := range calls {
			if got := c.Sub(start); got != want[i] {
				t.Errorf("issuance %d at %v, want %v", i, got, want[i])
			}
		}
		last := issued[len(issued)-1]
		if s := h.installed(t); s != last.Serial {
			t.Errorf("certificate %d in place, want the last issued, %d", s, last.Serial)
		}
		if checks, reloads := h.sshd.counts(); checks != 3 || reloads != 3 {
			t.Errorf("sshd -t %d times and reloaded %d times, want 3 and 3", checks, reloads)
		}
		st := h.Status()
		due := start.Add(32*time.Hour + 16*time.Hour)
		if st.Cert == nil || st.Cert.Serial != last.Serial || !st.Cert.NextRenewal.Equal(due) || st.SSHDReloads != 3 {
			t.Errorf("status %+v, want serial %d due %v, 3 reloads", st.Cert, last.Serial, due)
		}
		if st.Task.LastSuccess.IsZero() || !st.Task.LastFailure.IsZero() {
			t.Errorf("task status %+v, want successes only", st.Task)
		}
		if n := metric(t, h.reg, "devid_host_certificate_next_renewal_seconds"); n != float64(due.Unix()) {
			t.Errorf("next renewal metric %v, want %d", n, due.Unix())
		}
		if n := metric(t, h.reg, "devid_renewals_total", "result", "success"); n != 3 {
			t.Errorf("renewals_total{success} = %v, want 3", n)
		}
		if n := metric(t, h.reg, "devid_sshd_reloads_total", "result", "success"); n != 3 {
			t.Errorf("sshd_reloads_total{success} = %v, want 3", n)
		}
	})
}

// TestHostCertificateBacksOff: while the CA is down the task keeps the
// current certificate and retries after renew's back-off, spread by the
// certificate's draw, and from the second failure over part of the time
// the certificate has left (renew.Policy.RetryDelay); the failures are counted, logged in the status, and the
// attestation counted as failed.
func TestHostCertificateBacksOff(t *testing.T) {
	dir := t.TempDir()
	const draw = 0.3 // once per certificate: its renewal time and back-offs
	synctest.Test(t, func(t *testing.T) {
		h := newHostCertTask(t, dir, 24*time.Hour, draw)
		start := time.Now()
		h.issuer.down = func(now time.Time) bool { return now.Sub(start) >= time.Hour }
		runFor(t, 19*time.Hour, h.Run)
		calls, issued := h.issuer.history()
		if len(issued) != 1 || h.installed(t) != issued[0].Serial {
			t.Fatalf("%d certificates issued, %d in place: want the first kept", len(issued), h.installed(t))
		}
		policy := renew.Policy{}
		at := policy.RenewAt(start, start.Add(24*time.Hour), draw).Sub(start)
		for j := 1; j < len(calls); j++ {
			if got := calls[j].Sub(start); got != at {
				t.Fatalf("attempt %d at %v, want %v", j, got, at)
			}
			at += policy.RetryDelay(j, draw, 24*time.Hour-at)
		}
		if len(calls) < 5 {
			t.Fatalf("%d attempts in the 3 hours after the renewal time, want at least 5", len(calls))
		}
		fails := float64(len(calls) - 1)
		if n := metric(t, h.reg, "devid_renewals_total", "result", "failure"); n != fails {
			t.Errorf("renewals_total{failure} = %v, want %v", n, fails)
		}
		if n := metric(t, h.reg, "devid_attestations_total", "result", "failure"); n != fails {
			t.Errorf("attestations_total{failure} = %v, want %v", n, fails)
		}
		st := h.Status()
		if !strings.Contains(st.Task.LastError, "keeping the current certificate") || !strings.Contains(st.Task.LastError, "connection refused") {
			t.Errorf("last error %q", st.Task.LastError)
		}
		if st.Cert == nil || st.Cert.Serial != issued[0].Serial {
			t.Errorf("status shows %+v, want the certificate kept", st.Cert)
		}
	})
}

// TestHostCertificateOutagePastExpiry: a CA down from before the renewal
// time until after the certificate expired: no retry is scheduled after
// the expiry, the task tries again at the expiry, and once the CA is back
// a new certificate is in place within the longest back-off.
func TestHostCertificateOutagePastExpiry(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		h := newHostCertTask(t, dir, 24*time.Hour, 0.5)
		start := time.Now()
		expiry := start.Add(24 * time.Hour)
		back := start.Add(30 * time.Hour)
		h.issuer.down = func(now time.Time) bool { return now.After(start) && now.Before(back) }
		runFor(t, 30*time.Hour+renew.DefaultMaxBackoff, h.Run)
		calls, issued := h.issuer.history()
		if !slices.ContainsFunc(calls, func(c time.Time) bool { return c.Equal(expiry) }) {
			t.Errorf("no attempt at the expiry %v", expiry)
		}
		for i := 1; i < len(calls); i++ {
			if calls[i-1].Before(expiry) && calls[i].After(expiry) {
				t.Errorf("a retry scheduled past the expiry: %v then %v", calls[i-1].Sub(start), calls[i].Sub(start))
			}
		}
		if len(issued) != 2 || h.installed(t) != issued[1].Serial {
			t.Fatalf("%d certificates issued, %d in place: want a new one once the CA is back", len(issued), h.installed(t))
		}
	})
}

// TestHostCertificateSSHDRefuses: when sshd -t refuses the new certificate
// the old one is put back, sshd is not reloaded, the refusal is counted,
// and the task retries after its back-off, not at once; once sshd accepts,
// the new certificate is in place.
func TestHostCertificateSSHDRefuses(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		h := newHostCertTask(t, dir, 24*time.Hour)
		runFor(t, time.Minute, h.Run) // the first certificate
		first := h.installed(t)
		h.sshd.mu.Lock()
		h.sshd.refuse = true
		h.sshd.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { h.Run(ctx); close(done) }()
		synctest.Wait()
		due := h.Status().Cert.NextRenewal
		time.Sleep(time.Until(due) + time.Second) // past the renewal time, within the first back-off
		synctest.Wait()
		if got := h.installed(t); got != first {
			t.Fatalf("certificate %d in place after sshd -t refused, want the old %d", got, first)
		}
		if _, reloads := h.sshd.counts(); reloads != 1 {
			t.Errorf("%d reloads, want only the first certificate's", reloads)
		}
		if n := metric(t, h.reg, "devid_sshd_reloads_total", "result", "check_failed"); n != 1 {
			t.Errorf("sshd_reloads_total{check_failed} = %v, want 1", n)
		}
		if st := h.Status(); st.Cert == nil || st.Cert.Serial != first || !strings.Contains(st.Task.LastError, "sshd refused") {
			t.Errorf("status %+v %q", st.Cert, st.Task.LastError)
		}
		h.sshd.mu.Lock()
		h.sshd.refuse = false
		h.sshd.mu.Unlock()
		time.Sleep(renew.DefaultMaxBackoff)
		synctest.Wait()
		cancel()
		<-done
		calls, issued := h.issuer.history()
		if got := h.installed(t); got != issued[len(issued)-1].Serial || got == first {
			t.Fatalf("certificate %d in place once sshd accepts, want the newest", got)
		}
		if calls[2].Sub(calls[1]) < renew.DefaultMinBackoff/2 {
			t.Errorf("retried %v after sshd refused, want a back-off", calls[2].Sub(calls[1]))
		}
	})
}

// TestHostCertificateRenewNow: a renewal asked for (RenewNow) happens at
// once; one asked for while the CA is down is retried after the back-off
// until it succeeds, not left for the usual renewal time.
func TestHostCertificateRenewNow(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		now := make(chan struct{}, 1)
		h := newHostCertTask(t, dir, 24*time.Hour)
		h.HostCertificate = hostd.NewHostCertificate(hostd.HostCertificateConfig{
			File: h.file, Key: hostKey(t), Principals: []string{"web-1"}, Issuer: h.issuer, SSHD: h.sshd, Files: h.files,
			TaskOptions: hostd.TaskOptions{Registerer: prometheus.NewRegistry()}, Rand: func() float64 { return 0 }, RenewNow: now})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan struct{})
		go func() { h.Run(ctx); close(done) }()
		time.Sleep(time.Hour)
		start := time.Now()
		var up time.Time
		h.issuer.mu.Lock()
		h.issuer.down = func(t time.Time) bool { return t.Before(start.Add(time.Minute)) }
		up = start.Add(time.Minute)
		h.issuer.mu.Unlock()
		now <- struct{}{}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		calls, issued := h.issuer.history()
		if len(issued) != 2 {
			t.Fatalf("%d certificates: want the renewal asked for, once the CA was back", len(issued))
		}
		if !calls[1].Equal(start) {
			t.Errorf("renewal asked for at %v ran at %v", start, calls[1])
		}
		last := calls[len(calls)-1]
		if last.Before(up) || last.Sub(up) > renew.DefaultMaxBackoff {
			t.Errorf("the renewal succeeded at %v, want soon after the CA was back at %v", last, up)
		}
		cancel()
		<-done
	})
}

// TestHostCertificateKeepsValidOnDisk: a valid certificate for the host
// key already in place is kept (no issuance until its renewal time) and
// shown at once; one for another key, for other principals, or expired,
// is replaced at once.
func TestHostCertificateKeepsValidOnDisk(t *testing.T) {
	for _, tc := range []struct {
		name string
		prep func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate
		kept bool
		// unset: the configuration gives no principals (the CA gives the
		// inventory's names): any the certificate has are fine.
		unset bool
	}{
		{"valid", func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate {
			got, _ := h.issuer.Issue(context.Background(), key, []string{"web-1.example.com"})
			return got.Cert
		}, true, false},
		{"another key", func(t *testing.T, h *hostCertTask, _ ssh.PublicKey) *ssh.Certificate {
			got, _ := h.issuer.Issue(context.Background(), hostKey(t), []string{"web-1.example.com"})
			return got.Cert
		}, false, false},
		{"expired", func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate {
			got, _ := newFakeIssuer(t, time.Hour).Issue(context.Background(), key, []string{"web-1.example.com"})
			time.Sleep(2 * time.Hour)
			return got.Cert
		}, false, false},
		{"other principals", func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate {
			got, _ := h.issuer.Issue(context.Background(), key, []string{"old-name"})
			return got.Cert
		}, false, false},
		{"principals unset", func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate {
			got, _ := h.issuer.Issue(context.Background(), key, []string{"web-1", "web-1.example.com"})
			return got.Cert
		}, true, true},
		{"principals unset, expired", func(t *testing.T, h *hostCertTask, key ssh.PublicKey) *ssh.Certificate {
			got, _ := newFakeIssuer(t, time.Hour).Issue(context.Background(), key, []string{"web-1"})
			time.Sleep(2 * time.Hour)
			return got.Cert
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				h := newHostCertTask(t, dir, 24*time.Hour)
				key := hostKey(t)
				principals := []string{"web-1.example.com"}
				if tc.unset {
					principals = nil
				}
				h.HostCertificate = hostd.NewHostCertificate(hostd.HostCertificateConfig{
					File: h.file, Key: key, Principals: principals, Issuer: h.issuer, SSHD: h.sshd, Files: h.files,
					TaskOptions: hostd.TaskOptions{Registerer: prometheus.NewRegistry()}, Rand: func() float64 { return 0 }})
				prev := tc.prep(t, h, key)
				if err := os.WriteFile(h.file, ssh.MarshalAuthorizedKey(prev), 0o644); err != nil {
					t.Fatal(err)
				}
				runFor(t, time.Hour, h.Run)
				_, issued := h.issuer.history()
				if kept := h.installed(t) == prev.Serial; kept != tc.kept {
					t.Fatalf("certificate %d in place (%d issued), kept = %v, want %v", h.installed(t), len(issued), kept, tc.kept)
				}
				if st := h.Status(); st.Cert == nil || st.Cert.Serial != h.installed(t) {
					t.Errorf("status %+v, want the certificate in place", st.Cert)
				}
			})
		})
	}
}

// errIssuer fails every issuance with err.
type errIssuer struct{ err error }

func (e errIssuer) Issue(context.Context, ssh.PublicKey, []string) (*hostd.Issued, error) {
	return nil, e.err
}

// TestHostCertificateCountsAttestations: an enrolment refused after the
// device certificate counts as an attestation that succeeded (and sets the
// device certificate's expiry); one refused at attestation as one that
// failed; a TPM that could not be opened as none.
func TestHostCertificateCountsAttestations(t *testing.T) {
	devCert := &x509.Certificate{NotAfter: time.Unix(1900000000, 0)}
	for _, tc := range []struct {
		name             string
		err              error
		success, failure float64
		deviceNotAfter   float64
	}{
		{"refused at SSH certificate", &enroll.StepError{Step: enroll.StepSSHCertificate, Err: errors.New("no"), DeviceCertificate: devCert}, 1, 0, 1900000000},
		{"refused at attestation", &enroll.StepError{Step: enroll.StepAttest, Err: errors.New("not registered")}, 0, 1, 0},
		{"no TPM", errors.New("open /dev/tpmrm0: no such file"), 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				reg := prometheus.NewRegistry()
				h := hostd.NewHostCertificate(hostd.HostCertificateConfig{File: filepath.Join(dir, "cert.pub"), Key: hostKey(t),
					Issuer: errIssuer{tc.err}, SSHD: &fakeSSHD{}, Files: hostd.NewFiles(), TaskOptions: hostd.TaskOptions{Registerer: reg}, Rand: func() float64 { return 0 }})
				runFor(t, time.Second, h.Run) // the first attempt only: the next is 2.5 s later
				if s, f := metric(t, reg, "devid_attestations_total", "result", "success"), metric(t, reg, "devid_attestations_total", "result", "failure"); s != tc.success || f != tc.failure {
					t.Errorf("attestations: %v succeeded, %v failed; want %v and %v", s, f, tc.success, tc.failure)
				}
				if n := metric(t, reg, "devid_device_certificate_not_after_seconds"); n != tc.deviceNotAfter {
					t.Errorf("device certificate not after %v, want %v", n, tc.deviceNotAfter)
				}
				if n := metric(t, reg, "devid_renewals_total", "result", "failure"); n != 1 {
					t.Errorf("renewals_total{failure} = %v, want 1", n)
				}
			})
		})
	}
}
