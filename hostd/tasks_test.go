package hostd_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// TestRevokedKeysRefusesRollback: a KRL whose version is not newer than
// the one in place (a CA restored from an old backup, a replayed answer)
// is refused and counted; the file, the status and the metrics keep the
// newer one.
func TestRevokedKeysRefusesRollback(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revoked.krl")
	synctest.Test(t, func(t *testing.T) {
		ca := newSigner(t)
		keys := &hostd.CAKeys{}
		keys.Set([]ssh.PublicKey{ca.PublicKey()})
		v5, sig5 := signedKRL(t, ca, 5)
		v3, sig3 := signedKRL(t, ca, 3)
		srv := newFakeCA(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("after") == "0" {
				krldist.Serve(w, 5, time.Unix(1700000000, 0), v5, sig5)
				return
			}
			krldist.Serve(w, 3, time.Unix(1600000000, 0), v3, sig3)
		})
		reg := prometheus.NewRegistry()
		k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: srv}, File: file,
			Files: hostd.NewFiles(), CAKeys: keys, TaskOptions: hostd.TaskOptions{Registerer: reg}, Rand: func() float64 { return 0.5 }})
		runFor(t, 5*time.Minute, k.Run)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if parsed, err := krl.Parse(b); err != nil || parsed.Version != 5 {
			t.Fatalf("KRL in place: %v, %v; want version 5", parsed, err)
		}
		st := k.Status()
		if st.Version != 5 || !strings.Contains(st.Task.LastError, "not newer than the installed 5") {
			t.Errorf("status: version %d, last error %q", st.Version, st.Task.LastError)
		}
		if n := metric(t, reg, "devid_krl_version"); n != 5 {
			t.Errorf("devid_krl_version = %v, want 5", n)
		}
		if n := metric(t, reg, "devid_krl_fetch_failures_total"); n < 2 {
			t.Errorf("devid_krl_fetch_failures_total = %v, want every refusal counted", n)
		}
	})
}

// TestWatchRestores: a managed file someone deletes or changes is put
// back, counted by file in the status and the metric; a write of the
// configuration file is reported, not restored. Real fsnotify: it waits
// for the events, bounded only against a hang.
func TestWatchRestores(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "user_ca.pub")
	cfgFile := filepath.Join(dir, "hostd.json")
	files := hostd.NewFiles()
	if err := files.Write(file, []byte("good\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var configChanged atomic.Int32
	reg := prometheus.NewRegistry()
	w := hostd.NewWatch(hostd.WatchConfig{Files: files, Dirs: []string{dir}, ConfigFile: cfgFile,
		ConfigChanged: func() { configChanged.Add(1) }, TaskOptions: hostd.TaskOptions{Registerer: reg}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// The watcher is up once a config write is seen.
	waitFor(t, time.Minute, "the config file write reported", func() bool {
		os.WriteFile(cfgFile, []byte("{}"), 0o644)
		return configChanged.Load() > 0
	})
	os.Remove(file)
	waitFor(t, time.Minute, "the deleted file put back", func() bool {
		b, err := os.ReadFile(file)
		return err == nil && string(b) == "good\n"
	})
	os.WriteFile(file, []byte("tampered\n"), 0o644)
	waitFor(t, time.Minute, "the changed file put back", func() bool {
		b, err := os.ReadFile(file)
		return err == nil && string(b) == "good\n" && w.Status().Restored[file] >= 2
	})
	if n := metric(t, reg, "devid_files_restored_total", "file", file); n < 2 {
		t.Errorf("devid_files_restored_total{file} = %v, want 2", n)
	}
	if _, err := os.Stat(cfgFile); err != nil {
		t.Errorf("the config file: %v", err)
	}
	if st := w.Status(); st.Task.LastSuccess.IsZero() {
		t.Errorf("task status %+v: a restore is a success", st.Task)
	}
}

// TestMetricNames: the names every alert rule and dashboard may use
// include each task's, and only devid_ ones.
func TestMetricNames(t *testing.T) {
	names := hostd.MetricNames()
	for _, want := range []string{"devid_build_info", "devid_host_certificate_not_after_seconds", "devid_user_ca_keys",
		"devid_krl_version", "devid_files_restored_total", "devid_task_last_success_seconds", "devid_sshd_reloads_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("MetricNames() lacks %s: %v", want, names)
		}
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "devid_") {
			t.Errorf("metric %s without the devid_ prefix", n)
		}
	}
}

// waitFor checks cond every 10 ms until it holds; limit only bounds a hang.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	hang := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-hang:
			t.Fatalf("no %s within %v", what, limit)
		}
	}
}

// TestRevokedKeysInstalled: the Installed function is given the KRL in
// place at Prepare, and then each KRL the task installs, decoded; not a
// refused one.
func TestRevokedKeysInstalled(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revoked.krl")
	synctest.Test(t, func(t *testing.T) {
		ca := newSigner(t)
		keys := &hostd.CAKeys{}
		keys.Set([]ssh.PublicKey{ca.PublicKey()})
		v2, _ := signedKRL(t, ca, 2)
		if err := os.WriteFile(file, v2, 0o644); err != nil {
			t.Fatal(err)
		}
		v5, sig5 := signedKRL(t, ca, 5)
		v4, sig4 := signedKRL(t, ca, 4)
		srv := newFakeCA(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("after") == "2" {
				krldist.Serve(w, 5, time.Unix(1700000000, 0), v5, sig5)
				return
			}
			krldist.Serve(w, 4, time.Unix(1600000000, 0), v4, sig4) // older: refused
		})
		var got []uint64
		k := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{CAURL: "https://ca.test", HTTP: &http.Client{Transport: srv}, File: file,
			Files: hostd.NewFiles(), CAKeys: keys, Rand: func() float64 { return 0.5 },
			Installed: func(k *krl.KRL) { got = append(got, k.Version) }})
		if err := k.Prepare(); err != nil {
			t.Fatal(err)
		}
		runFor(t, 5*time.Minute, k.Run)
		if !slices.Equal(got, []uint64{2, 5}) {
			t.Fatalf("Installed was given versions %v, want [2 5]", got)
		}
	})
}
