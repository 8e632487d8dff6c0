package hostd

import (
	"bytes"
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
	"os"
	"slices"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/renew"
	"github.com/devid-ssh/devid/tpm"
	"golang.org/x/crypto/ssh"
)

// HostCert keeps the host certificate valid.
type HostCert struct {
	Cfg     *Config
	Enroll  *enroll.Client
	OpenTPM func() (*tpm.TPM, error)
	SSHD    SSHD
	Files   *Files
	Report  *Reporter
	Policy  renew.Policy
	Rand    func() float64 // jitter draw in [0,1)
	// RenewNow, if set, asks for a renewal at once (`devid-hostd renew`).
	RenewNow <-chan struct{}
	// Ready is called once a valid certificate is in place: at start if
	// the one on disk is valid for the host key, else after the first
	// issuance.
	Ready func()
}

// Run keeps the certificate valid until ctx is done.
func (h *HostCert) Run(ctx context.Context) error {
	pub, err := HostPublicKey(h.Cfg)
	if err != nil {
		return err
	}
	var st renew.State
	ready := false
	// A renewal asked for (the configured principals changed, or SIGUSR1)
	// stays asked for until one succeeds; a failed one is retried after the
	// failure back-off, not at the usual time.
	pending, pendingFailures, retryAt := false, 0, time.Time{}
	if cert, written := h.current(pub); cert != nil {
		st = h.state(cert, written)
		h.publish(cert, st)
		h.Report.Log.Info("host certificate in place", "file", h.Cfg.HostCertificate, "serial", cert.Serial, "not_after", st.NotAfter)
		h.Ready()
		ready = true
		if !samePrincipals(cert.ValidPrincipals, h.Cfg.Principals) {
			h.Report.Log.Info("the configured principals differ from the certificate's: renewing now",
				"certificate", cert.ValidPrincipals, "configured", h.Cfg.Principals)
			pending = true
		}
	}
	for {
		now := h.Report.Now()
		d := h.Policy.Decide(now, st)
		if pending && !d.Renew {
			if !now.Before(retryAt) {
				d.Renew = true
			} else if w := retryAt.Sub(now); w < d.Wait {
				d.Wait = w
			}
		}
		if !d.At.IsZero() {
			h.Report.M.NextRenewal.Set(float64(d.At.Unix()))
		}
		if !d.Renew {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d.Wait):
			case <-h.RenewNow:
				pending, pendingFailures, retryAt = true, 0, time.Time{}
			}
			continue
		}
		cert, err := h.renew(ctx, pub)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			st.Failures++
			st.LastFailure = h.Report.Now()
			if pending {
				pendingFailures++
				retryAt = st.LastFailure.Add(h.Policy.Backoff(pendingFailures, h.Rand()))
			}
			h.Report.M.Renewals.WithLabelValues("failure").Inc()
			h.Report.Failure(TaskHostCert, fmt.Errorf("renewal %d failed, keeping the current certificate: %w", st.Failures, err))
			continue
		}
		pending, pendingFailures, retryAt = false, 0, time.Time{}
		st = h.state(cert, h.Report.Now())
		h.Report.M.Renewals.WithLabelValues("success").Inc()
		h.Report.Success(TaskHostCert)
		h.publish(cert, st)
		h.Report.Log.Info("host certificate renewed", "serial", cert.Serial, "principals", cert.ValidPrincipals,
			"not_after", st.NotAfter, "next_renewal", h.Policy.RenewAt(st.NotBefore, st.NotAfter, st.Rnd))
		if !ready {
			h.Ready()
			ready = true
		}
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
func (h *HostCert) state(cert *ssh.Certificate, issued time.Time) renew.State {
	nb := time.Unix(int64(cert.ValidAfter), 0)
	if issued.After(nb) {
		nb = issued
	}
	na := time.Unix(int64(cert.ValidBefore), 0)
	if !nb.Before(na) {
		nb = time.Unix(int64(cert.ValidAfter), 0)
	}
	return renew.State{NotBefore: nb, NotAfter: na, Rnd: h.Rand()}
}

// current returns the certificate on disk, if it is a valid host
// certificate for pub, and when it was written (its modification time, at
// the latest now).
func (h *HostCert) current(pub ssh.PublicKey) (*ssh.Certificate, time.Time) {
	b, err := os.ReadFile(h.Cfg.HostCertificate)
	if err != nil {
		return nil, time.Time{}
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, time.Time{}
	}
	cert, ok := k.(*ssh.Certificate)
	now := h.Report.Now()
	if !ok || cert.CertType != ssh.HostCert || !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) || uint64(now.Unix()) >= cert.ValidBefore {
		return nil, time.Time{}
	}
	h.Files.remember(h.Cfg.HostCertificate, b, 0o644)
	written := now
	if fi, err := os.Stat(h.Cfg.HostCertificate); err == nil && fi.ModTime().Before(now) {
		written = fi.ModTime()
	}
	return cert, written
}

func (h *HostCert) publish(cert *ssh.Certificate, st renew.State) {
	m := h.Report.M
	m.CertNotBefore.Set(float64(st.NotBefore.Unix()))
	m.CertNotAfter.Set(float64(st.NotAfter.Unix()))
	next := h.Policy.RenewAt(st.NotBefore, st.NotAfter, st.Rnd)
	m.NextRenewal.Set(float64(next.Unix()))
	h.Report.update(func(d *StatusData) {
		d.HostCert = &CertStatus{File: h.Cfg.HostCertificate, Serial: cert.Serial, KeyID: cert.KeyId, Principals: cert.ValidPrincipals,
			NotBefore: st.NotBefore, NotAfter: st.NotAfter, NextRenewal: next}
	})
}

// renew attests the TPM afresh, gets a new certificate, and installs it.
func (h *HostCert) renew(ctx context.Context, pub ssh.PublicKey) (*ssh.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t, err := h.OpenTPM()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	att, err := h.Enroll.Attest(ctx, t)
	if err != nil {
		h.Report.M.Attestations.WithLabelValues("failure").Inc()
		return nil, err
	}
	defer att.Close()
	dc, err := h.Enroll.DeviceCertificate(ctx, att)
	if err != nil {
		h.Report.M.Attestations.WithLabelValues("failure").Inc()
		return nil, err
	}
	defer dc.Close()
	h.Report.M.Attestations.WithLabelValues("success").Inc()
	h.Report.M.DeviceCertNotAfter.Set(float64(dc.Chain[0].NotAfter.Unix()))
	cert, err := h.Enroll.SSHCertificate(ctx, dc, "host", h.Cfg.Principals, pub)
	if err != nil {
		return nil, err
	}
	return cert, h.install(ctx, cert)
}

// install writes the certificate, checks sshd accepts it, and reloads sshd;
// if sshd -t refuses, the old file is put back (none, if there was none),
// Watch keeps guarding only the last good one, and sshd is not reloaded.
func (h *HostCert) install(ctx context.Context, cert *ssh.Certificate) error {
	var refused error
	err := h.Files.WriteChecked(h.Cfg.HostCertificate, ssh.MarshalAuthorizedKey(cert), 0o644, func() error {
		refused = h.SSHD.Check(ctx)
		return refused
	})
	if err != nil && refused == nil {
		return err
	}
	if err != nil {
		h.Report.M.SSHDReloads.WithLabelValues("check_failed").Inc()
		return fmt.Errorf("sshd refused its configuration with the new certificate; old file put back, sshd not reloaded: %w", err)
	}
	if err := h.SSHD.Reload(ctx); err != nil {
		h.Report.M.SSHDReloads.WithLabelValues("failure").Inc()
		h.Report.Log.Error("sshd reload failed; the new certificate is in place", "err", err)
		return nil
	}
	h.Report.Reloaded()
	return nil
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
