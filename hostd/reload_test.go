package hostd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// recordingSSHD is an sshd that, at every reload asked for, notes the
// serial of the host certificate in file and when; down says, at each
// reload, whether it fails (systemd or the PID file unreachable).
type recordingSSHD struct {
	file string
	down func(now time.Time) bool

	mu      sync.Mutex
	serials []uint64    // the certificate in place at each successful reload
	tries   []time.Time // every reload asked for
}

func (s *recordingSSHD) Check(context.Context) error { return nil }

func (s *recordingSSHD) Reload(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.tries = append(s.tries, now)
	if s.down != nil && s.down(now) {
		return errors.New("reload sshd: systemd: reload ssh.service: connection refused")
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return err
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return err
	}
	s.serials = append(s.serials, k.(*ssh.Certificate).Serial)
	return nil
}

func (s *recordingSSHD) history() ([]uint64, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.serials...), append([]time.Time(nil), s.tries...)
}

// reloadTask is a HostCertificate task on a fake issuer and a recording
// sshd, with a RenewNow channel; the random draws are all draw.
func reloadTask(t *testing.T, dir string, draw float64) (*hostd.HostCertificate, *fakeIssuer, *recordingSSHD, chan struct{}, *prometheus.Registry) {
	file := filepath.Join(dir, "ssh_host_ecdsa_key-cert.pub")
	issuer, sshd := newFakeIssuer(t, 24*time.Hour), &recordingSSHD{file: file}
	now, reg := make(chan struct{}), prometheus.NewRegistry()
	h := hostd.NewHostCertificate(hostd.HostCertificateConfig{
		File: file, Key: hostKey(t), Issuer: issuer, SSHD: sshd, Files: hostd.NewFiles(), RenewNow: now,
		Rand: func() float64 { return draw }, TaskOptions: hostd.TaskOptions{Registerer: reg},
	})
	return h, issuer, sshd, now, reg
}

// TestHostCertificateReloadsAfterEveryRenewal: OpenSSH 9.8 and later read
// the host certificate only when sshd starts or reloads, so every new
// certificate — the first, each one renewed on time, one asked for with
// `devid-hostd renew` — is followed by a reload, made once the new file is
// in place.
func TestHostCertificateReloadsAfterEveryRenewal(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		h, issuer, sshd, renewNow, _ := reloadTask(t, dir, 0)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { h.Run(ctx); close(done) }()
		time.Sleep(20 * time.Hour) // the first certificate, and its renewal at 16 h
		renewNow <- struct{}{}     // one asked for
		time.Sleep(20 * time.Hour) // its renewal, 16 h later
		synctest.Wait()
		cancel()
		<-done
		_, issued := issuer.history()
		reloaded, _ := sshd.history()
		if len(issued) != 4 {
			t.Fatalf("%d certificates in 40 hours (one asked for), want 4", len(issued))
		}
		if len(reloaded) != len(issued) {
			t.Fatalf("%d certificates and %d reloads, want a reload after each", len(issued), len(reloaded))
		}
		for i, c := range issued {
			if reloaded[i] != c.Serial {
				t.Errorf("reload %d saw certificate %d in place, want the new %d", i+1, reloaded[i], c.Serial)
			}
		}
		if st := h.Status(); st.SSHDReloads != 4 {
			t.Errorf("status counts %d reloads, want 4", st.SSHDReloads)
		}
	})
}

// TestHostCertificateRetriesFailedReload: a reload that fails after a new
// certificate was written is retried at the failure back-off, without
// asking the CA again, until sshd reloads; meanwhile the task reports the
// failure (sshd 9.8+ still offers the previous certificate), then its
// success.
func TestHostCertificateRetriesFailedReload(t *testing.T) {
	dir := t.TempDir()
	const draw = 0.5
	synctest.Test(t, func(t *testing.T) {
		h, issuer, sshd, _, reg := reloadTask(t, dir, draw)
		start := time.Now()
		up := start.Add(10 * time.Minute)
		sshd.down = func(now time.Time) bool { return now.Before(up) }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { h.Run(ctx); close(done) }()
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		st := h.Status()
		if !strings.Contains(st.Task.LastError, "sshd reload") || !strings.Contains(st.Task.LastError, "offers the previous one") ||
			st.Task.LastFailure.Before(st.Task.LastSuccess) {
			t.Errorf("while sshd cannot reload, task status %+v; want the reload failure last", st.Task)
		}
		time.Sleep(time.Until(up) + renew.DefaultMaxBackoff)
		synctest.Wait()
		cancel()
		<-done

		calls, issued := issuer.history()
		if len(calls) != 1 {
			t.Fatalf("%d issuances, want 1: a failed reload is retried, not the certificate", len(calls))
		}
		reloaded, tries := sshd.history()
		if len(reloaded) != 1 || reloaded[0] != issued[0].Serial {
			t.Fatalf("reloads saw %v, want one, with certificate %d", reloaded, issued[0].Serial)
		}
		at := tries[0]
		for i := 1; i < len(tries); i++ {
			at = at.Add(renew.Policy{}.Backoff(i, draw))
			if !tries[i].Equal(at) {
				t.Errorf("reload %d at %v, want %v (back-off %d)", i+1, tries[i].Sub(start), at.Sub(start), i)
			}
		}
		if last := tries[len(tries)-1]; last.Before(up) || last.Sub(up) > renew.DefaultMaxBackoff {
			t.Errorf("sshd reloaded %v after it could, want within the longest back-off", last.Sub(up))
		}
		if n := metric(t, reg, "devid_sshd_reloads_total", "result", "failure"); n != float64(len(tries)-1) {
			t.Errorf("sshd_reloads_total{failure} = %v, want %d", n, len(tries)-1)
		}
		if n := metric(t, reg, "devid_sshd_reloads_total", "result", "success"); n != 1 {
			t.Errorf("sshd_reloads_total{success} = %v, want 1", n)
		}
		if st := h.Status(); st.SSHDReloads != 1 || !st.Task.LastSuccess.After(st.Task.LastFailure) {
			t.Errorf("status %d reloads, task %+v; want 1, the success last", st.SSHDReloads, st.Task)
		}
	})
}
