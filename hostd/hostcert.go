package hostd

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/renew"
	"github.com/devid-ssh/devid/tpm"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// Issuer gets an SSH host certificate for a key. devid-hostd's is
// EnrollIssuer: every call is a whole enrolment, a fresh attestation of the
// host's TPM, so the CA checks the device's status each time.
type Issuer interface {
	Issue(ctx context.Context, key ssh.PublicKey, principals []string) (*Issued, error)
}

// Issued is a new host certificate and what the enrolment learnt on the
// way.
type Issued struct {
	Cert *ssh.Certificate
	// DeviceCertNotAfter is the end of the device certificate's validity;
	// zero if unknown.
	DeviceCertNotAfter time.Time
}

// EnrollIssuer is the Issuer of a device with a TPM: it runs one
// enroll.Client.Enroll per certificate. A failure is an
// *enroll.StepError.
type EnrollIssuer struct {
	Client *enroll.Client
	// Type is the certificate type, "host" (default) or "user".
	Type string
	// Key is the TPM-resident key certified, loaded in TPM. Without it the
	// key certified is a file key (a migration the CA must allow), and the
	// TPM is opened with OpenTPM for each enrolment.
	Key     *tpm.ResidentKey
	TPM     *tpm.TPM
	OpenTPM func() (*tpm.TPM, error)
}

// Issue implements Issuer.
func (e *EnrollIssuer) Issue(ctx context.Context, key ssh.PublicKey, principals []string) (*Issued, error) {
	req := enroll.Request{Type: cmp.Or(e.Type, "host"), Principals: principals}
	t := e.TPM
	if e.Key != nil && t == nil {
		return nil, errors.New("hostd: EnrollIssuer: a resident key needs the TPM it is loaded in")
	}
	if e.Key != nil {
		req.Key = e.Key
	} else {
		req.FileKey = key
		var err error
		if t, err = e.OpenTPM(); err != nil {
			return nil, err // no attestation was tried
		}
		defer t.Close()
	}
	res, err := e.Client.Enroll(ctx, t, req)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: res.SSHCertificate, DeviceCertNotAfter: res.DeviceCertificate.NotAfter}, nil
}

// HostCertificateConfig configures the HostCertificate task.
type HostCertificateConfig struct {
	// File is sshd's HostCertificate.
	File string
	// CertType is the type of certificate kept: ssh.HostCert (default),
	// or ssh.UserCert for devid-agent's user certificate.
	CertType uint32
	// Key is the host key's public half, the key certified.
	Key ssh.PublicKey
	// Principals to ask for; none: the CA gives the inventory's names, and
	// a certificate in place keeps whatever principals it has.
	Principals []string
	Issuer     Issuer
	// SSHD checks and reloads sshd after a new certificate is written; nil
	// (devid-agent) just writes it.
	SSHD   SSHD
	Files  *Files
	Policy renew.Policy
	// Rand draws the renewal and back-off jitter in [0,1); default
	// math/rand/v2's Float64.
	Rand func() float64
	// RenewNow, if set, asks for a renewal at once (`devid-hostd renew`).
	RenewNow <-chan struct{}
	// Reloads, if set, counts the sshd reloads across the daemon's
	// configurations; each task of one configuration adds to it.
	Reloads *atomic.Uint64
	TaskOptions
}

// HostCertificate keeps sshd's HostCertificate valid: it renews the host
// certificate at 2/3 of its lifetime (package renew decides when), backs
// off with jitter when the CA cannot be reached and keeps the current
// certificate meanwhile, and starts over with a fresh attestation once it
// has expired. A new certificate is written atomically and checked with
// `sshd -t`; if sshd refuses it the old file is put back (none on a new
// host), Watch keeps guarding only the last good one, and sshd is not
// reloaded. sshd is reloaded after every new certificate; a reload that
// fails is retried at the failure back-off, without a new certificate,
// until one succeeds: OpenSSH 9.8 and later read the host certificate only
// when sshd starts or reloads, so until then sshd offers the previous
// certificate. It renews at once when principals are configured and
// differ from the certificate's, or when asked (RenewNow). With none
// configured it asks for none, and the CA gives the names the inventory
// has for the device.
type HostCertificate struct {
	c   HostCertificateConfig
	log *slog.Logger
	h   *health

	certNotBefore, certNotAfter, nextRenewal, deviceCertNotAfter prometheus.Gauge
	renewals, attestations, reloads                              *prometheus.CounterVec

	// A reload of sshd that failed after a new certificate was written is
	// retried at the failure back-off until one succeeds (retryReload).
	// Run's goroutine alone uses these.
	reloadFailures int
	reloadAt       time.Time
	reloadErr      error

	mu sync.Mutex
	st *CertStatus
}

// HostCertificateStatus is a snapshot of the task.
type HostCertificateStatus struct {
	// Cert is the certificate in place; nil if there is none yet.
	Cert *CertStatus
	// SSHDReloads counts the reloads of sshd asked for (Config.Reloads).
	SSHDReloads uint64
	Task        TaskStatus
}

// NewHostCertificate returns the task, its metrics registered.
func NewHostCertificate(c HostCertificateConfig) *HostCertificate {
	c.TaskOptions = c.TaskOptions.withDefaults()
	if c.Rand == nil {
		c.Rand = mrand.Float64
	}
	if c.Reloads == nil {
		c.Reloads = new(atomic.Uint64)
	}
	if c.CertType == 0 {
		c.CertType = ssh.HostCert
	}
	reg := c.Registerer
	t := &HostCertificate{c: c, log: c.Log,
		h:             newHealth(TaskHostCert, c.TaskOptions),
		certNotBefore: gauge(reg, "devid_host_certificate_not_before_seconds", "Start of the host certificate's validity, Unix time."),
		certNotAfter:  gauge(reg, "devid_host_certificate_not_after_seconds", "End of the host certificate's validity, Unix time."),
		nextRenewal:   gauge(reg, "devid_host_certificate_next_renewal_seconds", "When the host certificate is due for renewal, Unix time."),
		deviceCertNotAfter: gauge(reg, "devid_device_certificate_not_after_seconds",
			"End of the device certificate's validity, Unix time."),
		renewals:     counterVec(reg, "devid_renewals_total", "Host certificate renewals, by result.", "result", "success", "failure"),
		attestations: counterVec(reg, "devid_attestations_total", "TPM attestations, by result.", "result", "success", "failure"),
		reloads: counterVec(reg, "devid_sshd_reloads_total", "sshd reloads, by result (check_failed: sshd -t refused the new files).",
			"result", "success", "failure", "check_failed"),
	}
	return t
}

// Name is the task's name.
func (t *HostCertificate) Name() string { return TaskHostCert }

// Status returns a snapshot.
func (t *HostCertificate) Status() HostCertificateStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return HostCertificateStatus{Cert: t.st, SSHDReloads: t.c.Reloads.Load(), Task: t.h.status()}
}

// Run keeps the certificate valid until ctx is done.
func (t *HostCertificate) Run(ctx context.Context) error {
	var st renew.State
	// A renewal asked for (the configured principals changed, or RenewNow)
	// stays asked for until one succeeds; a failed one is retried after the
	// failure back-off, not at the usual time.
	pending, pendingFailures, retryAt := false, 0, time.Time{}
	if cert, written := t.current(); cert != nil {
		st = t.state(cert, written)
		t.publish(cert, st)
		t.log.Info("certificate in place", "type", certType(cert), "file", t.c.File, "serial", cert.Serial, "not_after", st.NotAfter)
		if len(t.c.Principals) > 0 && !samePrincipals(cert.ValidPrincipals, t.c.Principals) {
			t.log.Info("the configured principals differ from the certificate's: renewing now",
				"certificate", cert.ValidPrincipals, "configured", t.c.Principals)
			pending = true
		}
	}
	for {
		now := t.c.Now()
		d := t.c.Policy.Decide(now, st)
		if pending && !d.Renew {
			if !now.Before(retryAt) {
				d.Renew = true
			} else if w := retryAt.Sub(now); w < d.Wait {
				d.Wait = w
			}
		}
		if !d.Renew && t.reloadFailures > 0 {
			if !now.Before(t.reloadAt) {
				t.retryReload(ctx)
				continue
			}
			if w := t.reloadAt.Sub(now); w < d.Wait {
				d.Wait = w
			}
		}
		if !d.Renew {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d.Wait):
			case <-t.c.RenewNow:
				pending, pendingFailures, retryAt = true, 0, time.Time{}
			}
			continue
		}
		cert, err := t.renew(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			st.Failures++
			st.LastFailure = t.c.Now()
			if pending {
				pendingFailures++
				retryAt = st.LastFailure.Add(t.c.Policy.Backoff(pendingFailures, t.c.Rand()))
			}
			t.renewals.WithLabelValues("failure").Inc()
			t.h.fail(fmt.Errorf("renewal %d failed, keeping the current certificate: %w", st.Failures, err))
			continue
		}
		pending, pendingFailures, retryAt = false, 0, time.Time{}
		st = t.state(cert, t.c.Now())
		t.renewals.WithLabelValues("success").Inc()
		t.h.ok()
		if t.reloadFailures > 0 {
			t.h.fail(t.reloadErr)
		}
		next := t.publish(cert, st)
		t.log.Info("certificate renewed", "type", certType(cert), "serial", cert.Serial, "principals", cert.ValidPrincipals,
			"not_after", st.NotAfter, "next_renewal", next)
	}
}

// samePrincipals reports whether a and b hold the same principals, in any
// order.
func samePrincipals(a, b []string) bool {
	set := func(s []string) []string {
		s = slices.Clone(s)
		slices.Sort(s)
		return slices.Compact(s)
	}
	return slices.Equal(set(a), set(b))
}

// state is the renewal state of a certificate obtained at issued. The CA
// backdates certificates (a minute, against clock skew), so the lifetime
// that counts starts when the certificate was issued, not at ValidAfter:
// with short lifetimes the backdating would otherwise dominate.
func (t *HostCertificate) state(cert *ssh.Certificate, issued time.Time) renew.State {
	nb := time.Unix(int64(cert.ValidAfter), 0)
	if issued.After(nb) {
		nb = issued
	}
	na := time.Unix(int64(cert.ValidBefore), 0)
	if !nb.Before(na) {
		nb = time.Unix(int64(cert.ValidAfter), 0)
	}
	return renew.State{NotBefore: nb, NotAfter: na, Rnd: t.c.Rand()}
}

// current returns the certificate on disk, if it is a valid host
// certificate for the key, and when it was written (its modification time,
// at the latest now).
func (t *HostCertificate) current() (*ssh.Certificate, time.Time) {
	now := t.c.Now()
	cert, b := ReadCertificate(t.c.File, t.c.CertType, t.c.Key, now)
	if cert == nil {
		return nil, time.Time{}
	}
	t.c.Files.remember(t.c.File, b, 0o644)
	written := now
	if fi, err := os.Stat(t.c.File); err == nil && fi.ModTime().Before(now) {
		written = fi.ModTime()
	}
	return cert, written
}

// ReadCertificate returns the certificate in file (authorized_keys
// format) and the file's bytes, if it is a certificate of certType for key
// that has not expired at now; else nil.
func ReadCertificate(file string, certType uint32, key ssh.PublicKey, now time.Time) (*ssh.Certificate, []byte) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, nil
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok || cert.CertType != certType || !bytes.Equal(cert.Key.Marshal(), key.Marshal()) || uint64(now.Unix()) >= cert.ValidBefore {
		return nil, nil
	}
	return cert, b
}

// publish makes cert, in state st, the one the metrics and Status show, and
// returns when it is due for renewal: the one place that computes it.
func (t *HostCertificate) publish(cert *ssh.Certificate, st renew.State) time.Time {
	next := t.c.Policy.RenewAt(st.NotBefore, st.NotAfter, st.Rnd)
	t.certNotBefore.Set(float64(st.NotBefore.Unix()))
	t.certNotAfter.Set(float64(st.NotAfter.Unix()))
	t.nextRenewal.Set(float64(next.Unix()))
	t.mu.Lock()
	t.st = &CertStatus{File: t.c.File, Serial: cert.Serial, KeyID: cert.KeyId, Principals: cert.ValidPrincipals,
		NotBefore: st.NotBefore, NotAfter: st.NotAfter, NextRenewal: next}
	t.mu.Unlock()
	if t.c.Changed != nil {
		t.c.Changed()
	}
	return next
}

// renew gets a new certificate and installs it.
func (t *HostCertificate) renew(ctx context.Context) (*ssh.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	got, err := t.c.Issuer.Issue(ctx, t.c.Key, t.c.Principals)
	// An enrolment that failed before the CA issued the device certificate
	// is a failed attestation; one that failed before it tried (the TPM
	// could not be opened) is none.
	var se *enroll.StepError
	switch {
	case err == nil:
		t.attestations.WithLabelValues("success").Inc()
		t.setDeviceCertNotAfter(got.DeviceCertNotAfter)
	case errors.As(err, &se) && se.Attested():
		t.attestations.WithLabelValues("success").Inc()
		if se.DeviceCertificate != nil {
			t.setDeviceCertNotAfter(se.DeviceCertificate.NotAfter)
		}
	case se != nil:
		t.attestations.WithLabelValues("failure").Inc()
	}
	if err != nil {
		return nil, err
	}
	cert := got.Cert
	if cert == nil || cert.CertType != t.c.CertType || !bytes.Equal(cert.Key.Marshal(), t.c.Key.Marshal()) {
		return nil, errors.New("the CA answered with something other than a certificate of the type asked for, for the key")
	}
	return cert, t.install(ctx, cert)
}

func (t *HostCertificate) setDeviceCertNotAfter(na time.Time) {
	if !na.IsZero() {
		t.deviceCertNotAfter.Set(float64(na.Unix()))
	}
}

// install writes the certificate, checks sshd accepts it, and reloads sshd;
// if sshd -t refuses, the old file is put back (none, if there was none),
// Watch keeps guarding only the last good one, and sshd is not reloaded.
func (t *HostCertificate) install(ctx context.Context, cert *ssh.Certificate) error {
	if t.c.SSHD == nil {
		return t.c.Files.Write(t.c.File, ssh.MarshalAuthorizedKey(cert), 0o644)
	}
	var refused error
	err := t.c.Files.WriteChecked(t.c.File, ssh.MarshalAuthorizedKey(cert), 0o644, func() error {
		refused = t.c.SSHD.Check(ctx)
		return refused
	})
	if err != nil && refused == nil {
		return err
	}
	if err != nil {
		t.reloads.WithLabelValues("check_failed").Inc()
		return fmt.Errorf("sshd refused its configuration with the new certificate; old file put back, sshd not reloaded: %w", err)
	}
	t.reload(ctx)
	return nil
}

// reload asks sshd to reload after a new certificate was written. A
// failure is counted and the reload retried later (see retryReload): the
// new certificate stays in place either way.
func (t *HostCertificate) reload(ctx context.Context) error {
	if err := t.c.SSHD.Reload(ctx); err != nil {
		t.reloads.WithLabelValues("failure").Inc()
		t.reloadFailures++
		t.reloadAt = t.c.Now().Add(t.c.Policy.Backoff(t.reloadFailures, t.c.Rand()))
		t.reloadErr = fmt.Errorf("sshd reload %d failed, retrying at %s; the new certificate %s is in place, but sshd (OpenSSH 9.8 and later) offers the previous one until it reloads: %w",
			t.reloadFailures, t.reloadAt.Format(time.RFC3339), t.c.File, err)
		return t.reloadErr
	}
	t.reloads.WithLabelValues("success").Inc()
	t.c.Reloads.Add(1)
	t.reloadFailures, t.reloadAt, t.reloadErr = 0, time.Time{}, nil
	return nil
}

// retryReload retries a failed reload of sshd, and records the result in
// the task's health.
func (t *HostCertificate) retryReload(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := t.reload(ctx); err != nil {
		if ctx.Err() == nil {
			t.h.fail(err)
		}
		return
	}
	t.log.Info("sshd reloaded after earlier failures: it offers the new certificate", "file", t.c.File)
	t.h.ok()
}

// HostPublicKey returns the host key's public half, from HostKey.pub, or
// derived from HostKey; if neither exists it creates the key pair.
func HostPublicKey(c *Config) (ssh.PublicKey, error) {
	if b, err := os.ReadFile(c.HostKey + ".pub"); err == nil {
		k, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return nil, fmt.Errorf("host key %s.pub: %w", c.HostKey, err)
		}
		return k, nil
	}
	if b, err := os.ReadFile(c.HostKey); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", c.HostKey, err)
		}
		return s.PublicKey(), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("host key: %w", err)
	}
	var priv crypto.Signer
	var err error
	if c.HostKeyType == "ed25519" {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	} else {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(c.HostKey, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(c.HostKey+".pub", ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// certType names a certificate's type for logs.
func certType(c *ssh.Certificate) string {
	if c.CertType == ssh.UserCert {
		return "user"
	}
	return "host"
}
