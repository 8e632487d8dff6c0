package fleetsim

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
)

// attestPool is a few real software TPMs (swtpm) attesting in a loop,
// alternating replicas: /attestation/attest on one request, the
// credential activated in the TPM, /attestation/secret on the next, as
// enroll.Client.Attest does. What is timed is the two HTTP requests, from
// the client (TLS handshake included: a fresh connection per
// attestation), not the TPM's own work.
//
// Each TPM makes its AK once and has it certified again at every turn
// (enroll.Client.AttestAK): the RSA key generation a real device's TPM
// does on its own chip would otherwise take most of a CPU from the CAs
// and the simulated fleet on this machine.
type attestPool struct {
	tpms []*swtpmtest.Instance
	lat  timedLatencies
	errs Events
	mu   sync.Mutex
	err  string // the first failure
	n    []int  // attestations per replica
}

// counts returns the first failure and the attestations per replica so far.
func (p *attestPool) counts() (string, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err, slices.Clone(p.n)
}

// newAttestPool manufactures n swtpms and registers them as hosts.
func (e *env) newAttestPool(n int) (*attestPool, error) {
	p := &attestPool{n: make([]int, len(e.replicas))}
	var rows []map[string]string
	for i := range n {
		dir := filepath.Join(e.dir, fmt.Sprintf("swtpm-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return p, err
		}
		sw, err := swtpmtest.Start(dir)
		if err != nil {
			return p, err
		}
		p.tpms = append(p.tpms, sw)
		ek, err := sw.TPM.EK()
		if err != nil {
			return p, err
		}
		der, err := x509.MarshalPKIXPublicKey(ek.Public)
		if err != nil {
			return p, err
		}
		rows = append(rows, map[string]string{"ek": base64.StdEncoding.EncodeToString(der), "name": fmt.Sprintf("swtpm-%d", i),
			"kind": "host", "status": "active"})
	}
	if n > 0 {
		if err := e.importRows(rows, len(e.devices)); err != nil {
			return p, err
		}
	}
	return p, nil
}

func (p *attestPool) close() {
	for _, sw := range p.tpms {
		sw.Close()
	}
}

// timing sums the time of the requests it sends.
type timing struct {
	base  http.RoundTripper
	total time.Duration
}

func (t *timing) RoundTrip(r *http.Request) (*http.Response, error) {
	t0 := time.Now()
	resp, err := t.base.RoundTrip(r)
	if strings.HasPrefix(r.URL.Path, wire.AttestationPath) {
		t.total += time.Since(t0)
	}
	return resp, err
}

// run attests with every TPM in a loop, each starting at most once every
// every (a TPM making RSA keys without a pause would take a CPU from the
// CAs), until ctx is done.
func (p *attestPool) run(ctx context.Context, e *env, every time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i, sw := range p.tpms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One transport per replica; its idle connections closed
			// before each attestation, so that each starts with a TLS
			// handshake and none is left behind.
			trs := make([]*http.Transport, len(e.replicas))
			for r := range trs {
				trs[r] = e.keepAliveClient(1).Transport.(*http.Transport)
				defer trs[r].CloseIdleConnections()
			}
			ek, info, ak, err := newAK(sw)
			if err != nil {
				p.fail(err)
				return
			}
			defer ak.Close()
			var last time.Time
			for n := i; ctx.Err() == nil; n++ {
				r := n % len(e.replicas)
				trs[r].CloseIdleConnections()
				cl := enroll.New(e.replicas[r].URL(), e.ca.roots, discard())
				tr := &timing{base: trs[r]}
				cl.SetHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: tr})
				if err := sleepUntil(ctx, last.Add(every)); err != nil {
					return
				}
				last = time.Now()
				t0 := time.Now()
				_, err := cl.AttestAK(ctx, ek, info, ak)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					p.fail(err)
					time.Sleep(100 * time.Millisecond) // the CA may be down (outage): don't spin
					continue
				}
				p.lat.add(t0, tr.total, true)
				p.mu.Lock()
				p.n[r]++
				p.mu.Unlock()
			}
		}()
	}
	return &wg
}

// fail counts a failed attestation and keeps the first error.
func (p *attestPool) fail(err error) {
	p.errs.Add(time.Now())
	p.mu.Lock()
	if p.err == "" {
		p.err = err.Error()
	}
	p.mu.Unlock()
}

// newAK reads sw's EK and TPM info and makes the AK it attests with.
func newAK(sw *swtpmtest.Instance) (*tpm.EK, tpm.Info, *tpm.AK, error) {
	ek, err := sw.TPM.EK()
	if err != nil {
		return nil, tpm.Info{}, nil, err
	}
	info, err := sw.TPM.Info()
	if err != nil {
		return nil, tpm.Info{}, nil, err
	}
	ak, err := sw.TPM.NewAK()
	return ek, info, ak, err
}
