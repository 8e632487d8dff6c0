package hostd_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// fakeCA answers in memory, so that the tasks run inside a synctest bubble
// on its fake clock: it records when each request came, and what for.
type fakeCA struct {
	mu      sync.Mutex
	handler http.HandlerFunc
	times   map[string][]time.Time // by path
}

func newFakeCA(h http.HandlerFunc) *fakeCA {
	return &fakeCA{handler: h, times: map[string][]time.Time{}}
}

func (f *fakeCA) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.times[r.URL.Path] = append(f.times[r.URL.Path], time.Now())
	f.mu.Unlock()
	rec := httptest.NewRecorder()
	f.handler(rec, r)
	return rec.Result(), nil
}

func (f *fakeCA) requests(path string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times[path]...)
}

// metric returns the value of the metric name (with the given label
// pairs) gathered from reg; it fails the test if there is none.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// runFor runs task for d of the bubble's fake time, then stops it.
func runFor(t *testing.T, d time.Duration, task func(context.Context) error) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { task(ctx); close(done) }()
	time.Sleep(d)
	cancel()
	<-done
}

// TestKRLEarlyAnswersBackOff: a CA (or load balancer) that answers the
// KRL long-poll with an immediate 304 gets polls at least a second apart,
// backing off towards the long-poll's wait, counted in
// devid_krl_early_answers_total and not as successes.
func TestKRLEarlyAnswersBackOff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revoked.krl")
	synctest.Test(t, func(t *testing.T) {
		var ca *fakeCA
		ca = newFakeCA(func(w http.ResponseWriter, r *http.Request) {
			if len(ca.requests(krldist.Path)) > 1000 {
				// A hot loop: block it, or fake time never moves.
				time.Sleep(time.Hour)
			}
			w.WriteHeader(http.StatusNotModified)
		})
		reg := prometheus.NewRegistry()
		k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: ca}, File: file, Files: hostd.NewFiles(),
			TaskOptions: hostd.TaskOptions{Registerer: reg}, Rand: func() float64 { return 0.5 }})
		runFor(t, 10*time.Minute, k.Run)
		got := ca.requests(krldist.Path)
		// 2 s doubling to the 55 s wait, at 3/4 of each (the draw 0.5):
		// polls at 0, 1.5, 4.5, 10.5, 22.5, 46.5 s, then every 41.25 s.
		if len(got) > 25 || len(got) < 15 {
			t.Errorf("%d KRL requests in 10 minutes of immediate 304s, want 15 to 25", len(got))
		}
		for i := 1; i < len(got); i++ {
			if gap := got[i].Sub(got[i-1]); gap < time.Second {
				t.Fatalf("polls %d and %d %v apart, want at least 1s", i-1, i, gap)
			}
		}
		if n := metric(t, reg, "devid_krl_early_answers_total"); int(n) != len(got) {
			t.Errorf("devid_krl_early_answers_total = %v, want %d", n, len(got))
		}
		if n := metric(t, reg, "devid_task_last_success_seconds", "task", hostd.TaskKRL); n != 0 {
			t.Errorf("an early 304 counted as the KRL task's success")
		}
	})
}

// TestKRLHeldPollsAreNotEarly: a CA that holds the poll for its wait and
// then answers 304 is polled again at once, and that is a success.
func TestKRLHeldPollsAreNotEarly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revoked.krl")
	synctest.Test(t, func(t *testing.T) {
		ca := newFakeCA(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(55 * time.Second)
			w.WriteHeader(http.StatusNotModified)
		})
		reg := prometheus.NewRegistry()
		k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: ca}, File: file, Files: hostd.NewFiles(),
			TaskOptions: hostd.TaskOptions{Registerer: reg}})
		runFor(t, 10*time.Minute, k.Run)
		if n := len(ca.requests(krldist.Path)); n != 11 {
			t.Errorf("%d polls held 55 s each in 10 minutes, want 11", n)
		}
		if n := metric(t, reg, "devid_krl_early_answers_total"); n != 0 {
			t.Errorf("held polls counted as early answers: %v", n)
		}
	})
}

// TestKRLRetryJitter: after failures the KRL task waits a draw of the
// whole of renew's back-off base (5 s doubling to 2 minutes: full jitter),
// with the injected random draws, and at least MinInterval (1 s), so
// hosts that fail together retry apart.
func TestKRLRetryJitter(t *testing.T) {
	dir := t.TempDir()
	policy := renew.Policy{MaxBackoff: 2 * time.Minute}
	for i, draws := range [][]float64{{0.1, 0.9, 0.3, 0.7}, {0.8, 0.2, 0.6, 0.0}} {
		synctest.Test(t, func(t *testing.T) {
			ca := newFakeCA(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
			n := 0
			k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: ca}, File: filepath.Join(dir, fmt.Sprint(i)),
				Files: hostd.NewFiles(),
				Rand:  func() float64 { n++; return draws[(n-1)%len(draws)] }})
			runFor(t, 2*time.Minute, k.Run)
			got := ca.requests(krldist.Path)
			if len(got) < len(draws)+1 {
				t.Fatalf("%d requests", len(got))
			}
			for j, r := range draws {
				want := max(time.Duration(r*float64(policy.Backoff(j+1, 1))), time.Second)
				if gap := got[j+1].Sub(got[j]); gap != want {
					t.Errorf("draws %v: retry %d after %v, want %v", draws, j+1, gap, want)
				}
			}
		})
	}
}

// signedKRL returns a KRL of version v and its detached signature by ca.
func signedKRL(t *testing.T, ca ssh.Signer, v uint64) ([]byte, []byte) {
	body, err := (&krl.KRL{Version: v, Generated: time.Unix(1700000000, 0)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ca.Sign(rand.Reader, krldist.SignedData(v, body))
	if err != nil {
		t.Fatal(err)
	}
	return body, ssh.Marshal(sig)
}

func newSigner(t *testing.T) ssh.Signer {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKRLVerifiesWithLastGoodKeys: a KRL is verified with the last good
// user CA keys (from the installed TrustedUserCAKeys), so a broken
// /ssh/roots does not hold it up; /ssh/roots is asked only when those do not
// verify it (a rotated key); and a KRL neither verifies is refused.
func TestKRLVerifiesWithLastGoodKeys(t *testing.T) {
	current, old := newSigner(t), newSigner(t)
	for _, tc := range []struct {
		name      string
		installed ssh.Signer // the key in TrustedUserCAKeys
		rootsOK   bool
		want      uint64 // KRL version in place afterwards
	}{
		{"roots broken, installed keys verify", current, false, 1},
		{"key rotated, roots answer", old, true, 1},
		{"key rotated, roots broken", old, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			userCA := filepath.Join(dir, "user_ca.pub")
			os.WriteFile(userCA, append([]byte("# comment\n"), ssh.MarshalAuthorizedKey(tc.installed.PublicKey())...), 0o644)
			keys := &hostd.CAKeys{}
			if n, err := keys.Load(userCA); n != 1 || err != nil {
				t.Fatalf("Load: %d keys, %v", n, err)
			}
			body, sig := signedKRL(t, current, 1)
			file := filepath.Join(dir, "revoked.krl")
			synctest.Test(t, func(t *testing.T) {
				ca := newFakeCA(func(w http.ResponseWriter, r *http.Request) {
					switch {
					case r.URL.Path == "/ssh/roots" && tc.rootsOK:
						fmt.Fprintf(w, `{"userKey": [%q]}`, base64.StdEncoding.EncodeToString(current.PublicKey().Marshal()))
					case r.URL.Path == "/ssh/roots":
						http.Error(w, "broken", http.StatusInternalServerError)
					case r.URL.Query().Get("after") == "0":
						krldist.Serve(w, 1, time.Unix(1700000000, 0), body, sig)
					default:
						time.Sleep(55 * time.Second)
						w.WriteHeader(http.StatusNotModified)
					}
				})
				k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: ca}, File: file, Files: hostd.NewFiles(),
					CAKeys: keys})
				runFor(t, 10*time.Second, k.Run)
			})
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := krl.Parse(b)
			if err != nil || parsed.Version != tc.want {
				t.Fatalf("KRL in place: version %v (%v), want %d", parsed, err, tc.want)
			}
			if tc.want == 1 && !bytes.Equal(b, body) {
				t.Fatal("the KRL in place is not the CA's")
			}
		})
	}
}

// TestUserCABacksOff: while the CA is down the user CA task backs off
// exponentially with jitter instead of asking every Interval.
func TestUserCABacksOff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "user_ca.pub")
	synctest.Test(t, func(t *testing.T) {
		ca := newFakeCA(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
		u := hostd.NewTrustedUserCAKeys(hostd.TrustedUserCAKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: ca}, File: file, Interval: time.Second,
			Files: hostd.NewFiles(), Rand: func() float64 { return 0.5 }})
		runFor(t, 10*time.Minute, u.Run)
		// 5 s doubling to 5 min, at 3/4 of each (the draw 0.5): requests
		// at 0, 3.75, 11.25, 26.25, 56.25, 116.25, 236.25, 461.25 s.
		if n := len(ca.requests("/ssh/roots")); n != 8 {
			t.Errorf("%d requests in 10 minutes with the CA down, want 8", n)
		}
	})
}
