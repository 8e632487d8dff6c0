package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/revocation"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/google/go-attestation/attest"
	"github.com/smallstep/nosql"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// hang bounds a wait that only a hang would exceed.
const hang = 2 * time.Minute

// replicas are devid-ca serve processes of one CA directory (one set of
// keys) on one PostgreSQL database, each on its own port: the CA's
// devid-ca.json is replica 0's config, replicaN.json (a copy with another
// address) replica N's.
type replicas struct {
	t       *testing.T
	dir     string
	dsn     string
	configs []string
	urls    []string
	roots   *x509.CertPool
	admin   tls.Certificate
	procs   []*replicaProc
}

type replicaProc struct {
	cmd    *exec.Cmd
	exited chan error
}

// newReplicas makes a CA (devid-ca init) whose store is a fresh PostgreSQL
// database, and the configs of n replicas. None is started.
func newReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	r := &replicas{t: t, dir: filepath.Join(t.TempDir(), "ca"), dsn: pgtest.New(t), procs: make([]*replicaProc, n)}
	addrs := freeAddrs(t, n)
	res, err := caserver.Init(caserver.InitOptions{Dir: r.dir, DNSNames: []string{"127.0.0.1"}, Address: addrs[0], Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(res.Config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["db"] = map[string]any{"type": "postgresql", "dataSource": r.dsn}
	for i, addr := range addrs {
		cfg["address"] = addr
		file := res.Config
		if i > 0 {
			file = filepath.Join(r.dir, fmt.Sprintf("replica%d.json", i))
		}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r.configs = append(r.configs, file)
		r.urls = append(r.urls, "https://"+addr)
	}
	root, err := pemutil.ReadCertificate(filepath.Join(r.dir, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	r.roots = x509.NewCertPool()
	r.roots.AddCert(root)
	if r.admin, err = tls.LoadX509KeyPair(res.AdminCert, res.AdminKey); err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts replica i and waits until it answers /health.
func (r *replicas) start(i int) {
	r.t.Helper()
	r.launch(i)
	r.waitHealthy(i)
}

// startAll starts every replica at once, then waits until each answers
// /health.
func (r *replicas) startAll() {
	r.t.Helper()
	for i := range r.procs {
		r.launch(i)
	}
	for i := range r.procs {
		r.waitHealthy(i)
	}
}

// launch starts replica i's process, killed when the test ends.
func (r *replicas) launch(i int) {
	t := r.t
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", r.configs[i])
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	cmd.Stderr = prefixLog{t: t, prefix: fmt.Sprintf("replica %d: ", i)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &replicaProc{cmd: cmd, exited: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		p.exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	r.procs[i] = p
}

// waitHealthy waits until replica i answers /health.
func (r *replicas) waitHealthy(i int) {
	t := r.t
	t.Helper()
	p := r.procs[i]
	hc := r.client(nil)
	deadline := time.Now().Add(hang)
	for {
		resp, err := hc.Get(r.urls[i] + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.exited:
			t.Fatalf("replica %d exited before it served: %v", i, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d does not answer /health after %v: %v", i, hang, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill kills replica i with SIGKILL and waits for it to be gone.
func (r *replicas) kill(i int) {
	r.t.Helper()
	p := r.procs[i]
	if err := p.cmd.Process.Kill(); err != nil {
		r.t.Fatal(err)
	}
	<-p.exited
}

// client is an HTTPS client trusting the CA's root, presenting cert if not
// nil.
func (r *replicas) client(cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: r.roots}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Minute}
}

func (r *replicas) adminClient(i int) *adminapi.Client {
	r.t.Helper()
	c, err := adminapi.NewClient(r.urls[i], r.roots, &r.admin)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// fetchKRL gets replica i's KRL newer than after (long-polling up to wait),
// checking its signature.
func (r *replicas) fetchKRL(ctx context.Context, i int, after uint64, wait time.Duration) (*krldist.Signed, error) {
	k, err := krldist.Fetch(ctx, r.client(nil), r.urls[i], after, wait)
	if err != nil {
		return nil, err
	}
	if err := krldist.Verify(k.Version, k.Body, k.Signature, []ssh.PublicKey{r.userCA()}); err != nil {
		return nil, fmt.Errorf("replica %d: KRL version %d: %w", i, k.Version, err)
	}
	return k, nil
}

func (r *replicas) userCA() ssh.PublicKey {
	r.t.Helper()
	k, err := pemutil.Read(filepath.Join(r.dir, "secrets", "ssh_user_ca.key"))
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		r.t.Fatal(err)
	}
	return s.PublicKey()
}

// keyIDs are the key IDs a KRL revokes, in any section.
func keyIDs(t *testing.T, body []byte) map[string]bool {
	t.Helper()
	k, err := krl.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range k.Certs {
		for _, id := range s.KeyIDs {
			ids[id] = true
		}
	}
	return ids
}

func krlParse(b []byte) (*krl.KRL, error) { return krl.Parse(b) }

// prefixLog writes a process's standard error to the test log, each line
// prefixed.
type prefixLog struct {
	t      *testing.T
	prefix string
}

func (w prefixLog) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + l)
	}
	return len(p), nil
}

// fakeEK is an EK public key, in PEM, for a device that never attests:
// enough for the inventory and the KRL.
func fakeEK(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// addDevices registers n active hosts through replica i and returns
// their IDs.
func (r *replicas) addDevices(i, n int, prefix string) []string {
	r.t.Helper()
	c := r.adminClient(i)
	var ids []string
	for j := range n {
		d, err := c.AddDevice(adminapi.NewDevice{EK: fakeEK(r.t), Name: fmt.Sprintf("%s-%d", prefix, j), Kind: "host"})
		if err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	return ids
}

func postJSON(ctx context.Context, hc *http.Client, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, body)
	}
	return json.Unmarshal(body, out)
}

// TestReplicasEnrolAcross: a host enrols with a real swtpm through two
// replicas: /attestation/attest on replica 0, /attestation/secret on
// replica 1 (the pending attestation is in the database), the device
// certificate (ACME) from replica 1 and the SSH host certificate from
// replica 0. The secret, used up on replica 1, is refused on replica 0.
func TestReplicasEnrolAcross(t *testing.T) {
	r := newReplicas(t, 2)
	r.start(0)
	r.start(1)
	sw := swtpmtest.New(t)
	ek, err := sw.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"web-1.example.com"}
	d, err := r.adminClient(1).AddDevice(adminapi.NewDevice{Name: "web-1", Kind: "host", HostNames: names,
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := sw.TPM.Info()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := sw.TPM.NewAK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	req := wire.AttestRequest{TPMInfo: wire.TPMInfo{Version: 2, Manufacturer: strconv.FormatUint(uint64(info.Manufacturer), 10),
		Model: info.Model, FirmwareVersion: info.FirmwareVersion()}, EKCerts: [][]byte{ek.Certificate.Raw}}
	if req.EKPub, err = x509.MarshalPKIXPublicKey(ek.Public); err != nil {
		t.Fatal(err)
	}
	p := ak.AttestationParameters()
	req.AttestParams = wire.AttestationParameters{Public: p.Public, UseTCSDActivationFormat: p.UseTCSDActivationFormat,
		CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature}
	hc := r.client(nil)
	var ar wire.AttestResponse
	if err := postJSON(ctx, hc, r.urls[0]+wire.AttestPath, req, &ar); err != nil {
		t.Fatalf("attest on replica 0: %v", err)
	}
	secret, err := ak.ActivateCredential(ek, attest.EncryptedCredential{Credential: ar.Credential, Secret: ar.Secret})
	if err != nil {
		t.Fatal(err)
	}
	var sr wire.SecretResponse
	if err := postJSON(ctx, hc, r.urls[1]+wire.SecretPath, wire.SecretRequest{Secret: secret, DeviceID: ek.DeviceID}, &sr); err != nil {
		t.Fatalf("secret on replica 1, for an attestation begun on replica 0: %v", err)
	}
	var chain []*x509.Certificate
	for _, der := range sr.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 || chain[0].URIs == nil || chain[0].URIs[0].String() != d.ID {
		t.Fatalf("AK certificate from replica 1 is not for device %s", d.ID)
	}
	var again wire.SecretResponse
	if err := postJSON(ctx, hc, r.urls[0]+wire.SecretPath, wire.SecretRequest{Secret: secret, DeviceID: ek.DeviceID}, &again); err == nil {
		t.Fatal("replica 0 accepted a secret replica 1 had used up")
	}

	att := &enroll.Attestation{DeviceID: d.ID, AK: ak, Chain: chain}
	dc, err := enroll.New(r.urls[1], r.roots, quietLog(t)).DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatalf("device certificate from replica 1: %v", err)
	}
	defer dc.Close()
	pub, err := ssh.NewPublicKey(dc.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := enroll.New(r.urls[0], r.roots, quietLog(t)).SSHCertificate(ctx, dc, "host", names, pub)
	if err != nil {
		t.Fatalf("SSH host certificate from replica 0: %v", err)
	}
	if cert.KeyId != d.ID || cert.CertType != ssh.HostCert || !slices.Contains(cert.ValidPrincipals, names[0]) {
		t.Fatalf("SSH certificate: key ID %s, type %d, principals %v", cert.KeyId, cert.CertType, cert.ValidPrincipals)
	}
}

func quietLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(prefixLog{t: t, prefix: "client: "}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestReplicasKRLWakesOther: a quarantine made through one replica's
// admin API wakes a KRL long-poll on the other replica, which then serves
// a KRL revoking the device; in both directions, several times. The
// latency (from the admin request to the other replica's answer) is
// logged; only a hang fails the test.
func TestReplicasKRLWakesOther(t *testing.T) {
	r := newReplicas(t, 2)
	r.start(0)
	r.start(1)
	const rounds = 6
	ids := r.addDevices(0, rounds, "host")
	ctx := context.Background()
	var lat, call []time.Duration
	for i, id := range ids {
		writer, poller := i%2, 1-i%2
		k, err := r.fetchKRL(ctx, poller, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		v := k.Version
		got := make(chan *krldist.Signed, 1)
		errc := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			k, err := r.fetchKRL(ctx, poller, v, hang)
			if err != nil {
				errc <- err
				return
			}
			got <- k
		}()
		<-started
		// Should the long-poll reach the replica after the change, it
		// is answered at once: the figure is still from the request.
		t0 := time.Now()
		if _, err := r.adminClient(writer).SetStatus(id, adminapi.Status("quarantined"), "replica test"); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		select {
		case k := <-got:
			d := time.Since(t0)
			lat, call = append(lat, d), append(call, t1.Sub(t0))
			if k.Version <= v {
				t.Fatalf("replica %d answered a long-poll after %d with version %d", poller, v, k.Version)
			}
			if !keyIDs(t, k.Body)[id] {
				t.Fatalf("replica %d's KRL version %d does not revoke %s, quarantined through replica %d", poller, k.Version, id, writer)
			}
			t.Logf("quarantine through replica %d → KRL version %d on replica %d: %v after the request (the request took %v)", writer, k.Version, poller, d, t1.Sub(t0))
		case err := <-errc:
			t.Fatalf("long-poll on replica %d: %v", poller, err)
		case <-time.After(hang):
			t.Fatalf("a quarantine through replica %d did not wake a long-poll on replica %d", writer, poller)
		}
	}
	var after []time.Duration // from the admin API's answer
	for i := range lat {
		after = append(after, lat[i]-call[i])
	}
	slices.Sort(lat)
	slices.Sort(call)
	slices.Sort(after)
	t.Logf("cross-replica KRL wake-up over %d quarantines: from the admin request min %v, median %v, max %v; from its 2xx answer median %v, max %v (the admin request alone: median %v)",
		len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1], after[len(after)/2], after[len(after)-1], call[len(call)/2])
}

// TestReplicasKill9: a burst of status changes (quarantine, activate, in
// turn) sent to both replicas, and replica 0 killed with SIGKILL in the
// middle of it. Afterwards every change acknowledged with 2xx is in the
// inventory (a change whose request failed may or may not be), and the
// KRL served by the survivor, and by replica 0 restarted, revokes exactly
// the devices the inventory has quarantined; the KRL versions long-polling
// clients see on either replica only grow, and the restarted replica
// serves no version below one seen before.
func TestReplicasKill9(t *testing.T) {
	r := newReplicas(t, 2)
	r.start(0)
	r.start(1)
	const senders, perSender = 4, 5
	ids := r.addDevices(1, senders*perSender, "host")

	// Long-polling clients, one per replica, as hosts: each asks for a
	// version newer than the last it got.
	ctx, stopPolls := context.WithCancel(context.Background())
	defer stopPolls()
	var maxSeen atomic.Uint64
	var pollWG sync.WaitGroup
	pollErrs := make(chan error, 2)
	for i := range 2 {
		pollWG.Add(1)
		go func() {
			defer pollWG.Done()
			var last uint64
			for ctx.Err() == nil {
				k, err := r.fetchKRL(ctx, i, last, 30*time.Second)
				switch {
				case errors.Is(err, krldist.ErrNotModified):
					continue
				case err != nil:
					if ctx.Err() == nil && i == 1 {
						pollErrs <- fmt.Errorf("long-poll on the survivor: %w", err)
					}
					return // replica 0 was killed
				case k.Version <= last:
					pollErrs <- fmt.Errorf("replica %d answered a long-poll after version %d with version %d", i, last, k.Version)
					return
				}
				last = k.Version
				for {
					m := maxSeen.Load()
					if last <= m || maxSeen.CompareAndSwap(m, last) {
						break
					}
				}
			}
		}()
	}

	// Each sender owns perSender devices and sends to one replica (0 for
	// the first half): quarantine, activate, quarantine, … round the
	// devices, recording what was acknowledged and what was in flight
	// when a request failed.
	type outcome struct {
		acked    string // the last status acknowledged ("active" before any)
		inFlight string // a status whose request failed: it may have been committed
	}
	results := make([]outcome, len(ids))
	for i := range results {
		results[i].acked = "active"
	}
	var acked atomic.Int64
	killAt, stopAt := int64(30), int64(80)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replica := s * 2 / senders
			c := r.adminClient(replica)
			mine := ids[s*perSender : (s+1)*perSender]
			for n := 0; acked.Load() < stopAt; n++ {
				j := s*perSender + n%perSender
				to := "quarantined"
				if results[j].acked == "quarantined" {
					to = "active"
				}
				if _, err := c.SetStatus(mine[n%perSender], adminapi.Status(to), "burst"); err != nil {
					if replica == 1 {
						t.Errorf("survivor refused a status change: %v", err)
					}
					results[j].inFlight = to
					return // replica 0 is gone
				}
				results[j].acked = to
				acked.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(hang)
	for acked.Load() < killAt {
		if time.Now().After(deadline) {
			t.Fatalf("only %d changes acknowledged after %v", acked.Load(), hang)
		}
		time.Sleep(time.Millisecond)
	}
	r.kill(0)
	t.Logf("replica 0 killed after %d acknowledged changes", acked.Load())
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// The inventory, through the survivor.
	devs, err := r.adminClient(1).Devices(nil)
	if err != nil {
		t.Fatal(err)
	}
	inFlight := 0
	for _, o := range results {
		if o.inFlight != "" {
			inFlight++
		}
	}
	t.Logf("%d changes acknowledged in all, %d requests failed at the kill", acked.Load(), inFlight)
	status := map[string]string{}
	for _, d := range devs {
		status[d.ID] = string(d.Status)
	}
	want := map[string]bool{} // key IDs the KRL must revoke
	for j, id := range ids {
		o, st := results[j], status[id]
		if st != o.acked && (o.inFlight == "" || st != o.inFlight) {
			t.Errorf("device %s is %s; the last change acknowledged made it %s (in flight at the kill: %q)", id, st, o.acked, o.inFlight)
		}
		if st == "quarantined" {
			want[id] = true
		}
	}
	// The survivor's KRL comes to revoke exactly those (a change in
	// flight at the kill, committed but not published by replica 0, is
	// published by the survivor's catch-up).
	var final *krldist.Signed
	deadline = time.Now().Add(hang)
	for {
		k, err := r.fetchKRL(context.Background(), 1, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := keyIDs(t, k.Body); mapsEqual(got, want) {
			final = k
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after %v the survivor's KRL version %d revokes %d devices (%v), the inventory has %d quarantined (%v)",
				hang, k.Version, len(got), sortedKeys(got), len(want), sortedKeys(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("survivor's KRL: version %d, %d devices revoked", final.Version, len(want))

	// Replica 0, restarted on the same database, serves a KRL no older.
	r.start(0)
	k, err := r.fetchKRL(context.Background(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version < final.Version || k.Version < maxSeen.Load() {
		t.Fatalf("restarted replica 0 serves KRL version %d; the survivor served %d, long-polls saw up to %d", k.Version, final.Version, maxSeen.Load())
	}
	if got := keyIDs(t, k.Body); !mapsEqual(got, want) {
		t.Fatalf("restarted replica 0's KRL version %d revokes %v, want %v", k.Version, sortedKeys(got), sortedKeys(want))
	}
	stopPolls()
	pollWG.Wait()
	close(pollErrs)
	for err := range pollErrs {
		t.Error(err)
	}
	t.Logf("restarted replica 0: KRL version %d; long-polls saw up to %d", k.Version, maxSeen.Load())
}

// TestReplicasStartTogether: three replicas started at the same moment
// on an empty database all serve (they create step-ca's and devid's
// tables one at a time, under an advisory lock: two sessions creating the
// same table at once make PostgreSQL fail one of them), and serve one KRL.
func TestReplicasStartTogether(t *testing.T) {
	r := newReplicas(t, 3)
	r.startAll()
	var first *krldist.Signed
	for i := range 3 {
		k, err := r.fetchKRL(context.Background(), i, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = k
		} else if k.Version != first.Version || !bytes.Equal(k.Body, first.Body) {
			t.Fatalf("replica %d serves KRL version %d (%d bytes), replica 0 version %d (%d bytes)", i, k.Version, len(k.Body), first.Version, len(first.Body))
		}
	}
}

// TestReplicasCatchUp: a change committed to the database by a devid-ca
// that died before it rebuilt the KRL (here: the inventory opened on the
// database directly, with no revocation store to rebuild) is published by
// a running replica, notified of the write (krl-catchup), not ten minutes
// later by its periodic rebuild.
func TestReplicasCatchUp(t *testing.T) {
	r := newReplicas(t, 1)
	r.start(0)
	ids := r.addDevices(0, 1, "host")
	k, err := r.fetchKRL(context.Background(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	db, err := nosql.New("postgresql", r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	inv, err := inventory.Open(db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	// The dead replica is a devid-ca: its revocation store writes the
	// revoked key ID in the change's transaction; it dies before the
	// rebuild that would have published it (no OnDeviceChange).
	signers := map[string]ssh.Signer{}
	for _, kind := range []string{"host", "user"} {
		k, err := pemutil.Read(filepath.Join(r.dir, "secrets", "ssh_"+kind+"_ca.key"))
		if err != nil {
			t.Fatal(err)
		}
		if signers[kind], err = ssh.NewSignerFromKey(k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := revocation.Open(revocation.Config{HostCA: signers["host"].PublicKey(), UserCA: signers["user"].PublicKey(), Signer: signers["user"],
		MaxLifetime: 24 * time.Hour, Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, db, inv); err != nil {
		t.Fatal(err)
	}
	inv.OnDeviceChange(func([]inventory.DeviceChange) {})
	if _, err := inv.SetStatus("dead-replica", ids[0], inventory.StatusQuarantined, "committed, never published"); err != nil {
		t.Fatal(err)
	}
	got, err := r.fetchKRL(context.Background(), 0, k.Version, hang)
	if err != nil {
		t.Fatalf("no KRL after version %d within %v: %v", k.Version, hang, err)
	}
	if !keyIDs(t, got.Body)[ids[0]] {
		t.Fatalf("KRL version %d does not revoke %s", got.Version, ids[0])
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}
