package fleetsim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"golang.org/x/crypto/ssh"
)

// Throughput is figure 1 for one CA: SSH certificates per second through
// /1.0/ssh/sign, the same X5C request at the same concurrency.
type Throughput struct {
	CA        string  `json:"ca"`
	URL       string  `json:"url"`
	Issued    int     `json:"issued"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	Latency   Summary `json:"latency"`
	// CPUPerCert is the CA process's CPU time (user and system, from
	// /proc) per certificate issued: what each costs it, whatever else
	// runs on the machine. The database's is not counted.
	CPUPerCert float64 `json:"cpu_ms_per_cert"`
	CPUSeconds float64 `json:"cpu_s"`
	// FirstError is the first failure, if any.
	FirstError string `json:"first_error,omitempty"`
}

// signer is a simulated device able to ask for SSH certificates: its
// device certificate (minted by the bench) and its key, which is both the
// device certificate's and the one certified, as for a TPM-resident key.
type signer struct {
	dev *device
	dc  *enroll.DeviceCert
	pub ssh.PublicKey
}

func (e *env) newSigner(d *device) (*signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	chain, err := e.ca.deviceCert(d.id, k, time.Now(), 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		return nil, err
	}
	return &signer{dev: d, dc: &enroll.DeviceCert{DeviceID: d.id, Key: crypto.Signer(k), Chain: chain}, pub: pub}, nil
}

func (s *signer) certType() string {
	if s.dev.kind == "workstation" {
		return "user"
	}
	return "host"
}

// principals asked for: the host's name (which the inventory allows), or
// for a workstation the owner's login (devid sets a user certificate's
// principals itself; step-ca takes these).
func (s *signer) principals() []string {
	if s.dev.kind == "workstation" {
		return []string{"bench"}
	}
	return []string{s.dev.name}
}

// keepAliveClient is an HTTP client pinned to the CA's root that keeps up
// to n connections open: throughput runs measure the CA, not TLS
// handshakes.
func (e *env) keepAliveClient(n int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.ca.roots, MinVersion: tls.VersionTLS12},
		MaxIdleConns:    n, MaxIdleConnsPerHost: n, IdleConnTimeout: 10 * time.Second,
	}}
}

// throughput runs enroll.Client.SSHCertificate — devid's own request, an
// X5C token signed by the device key — against url with c workers for d.
func (e *env) throughput(ctx context.Context, srv *server, signers []*signer, c int, d time.Duration) (*Throughput, error) {
	name, url := srv.name, srv.URL()
	cpu0, err := cpuTime(srv.pid())
	if err != nil {
		return nil, err
	}
	cl := enroll.New(url, e.ca.roots, discard())
	hc := e.keepAliveClient(c)
	defer hc.CloseIdleConnections()
	cl.SetHTTPClient(hc)
	var lat Latencies
	var issued, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	var next atomic.Int64
	start := time.Now()
	stop := start.Add(d)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				s := signers[int(next.Add(1))%len(signers)]
				t0 := time.Now()
				_, err := cl.SSHCertificate(ctx, s.dc, s.certType(), s.principals(), s.pub)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat.Add(time.Since(t0))
				issued.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	cpu1, err := cpuTime(srv.pid())
	if err != nil {
		return nil, err
	}
	t := &Throughput{CA: name, URL: url, Issued: int(issued.Load()), Errors: int(failed.Load()), Seconds: el,
		PerSecond: float64(issued.Load()) / el, Latency: lat.Summary(), CPUSeconds: (cpu1 - cpu0).Seconds()}
	if t.Issued > 0 {
		t.CPUPerCert = t.CPUSeconds * 1000 / float64(t.Issued)
	}
	if v, ok := firstErr.Load().(string); ok {
		t.FirstError = v
	}
	if ctx.Err() != nil {
		return t, ctx.Err()
	}
	if t.Issued == 0 {
		return t, fmt.Errorf("fleetsim: %s issued no certificate in %s: %s", name, d, t.FirstError)
	}
	return t, nil
}
