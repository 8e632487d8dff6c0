package fleetsim

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }

// StepCAVersion is the stock step-ca the bench compares with.
const StepCAVersion = "v0.30.2"

var (
	stepOnce sync.Once
	stepBin  string
	stepErr  error
)

// stepCA returns a stock step-ca binary: $DEVID_BENCH_STEPCA, or one built
// from the module proxy (step-ca's own go.mod) into the user cache
// directory, once per machine.
func stepCA(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DEVID_BENCH_STEPCA"); p != "" {
		return p
	}
	stepOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			stepErr = err
			return
		}
		dir := filepath.Join(cache, "devid-bench", "step-ca-"+StepCAVersion)
		stepBin = filepath.Join(dir, "step-ca")
		if _, err := os.Stat(stepBin); err == nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/smallstep/certificates/cmd/step-ca@"+StepCAVersion)
		cmd.Dir = os.TempDir() // outside devid's module: step-ca's own go.mod
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			stepErr = &buildError{err, string(out)}
		}
	})
	if stepErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("building step-ca %s from the module proxy: %v", StepCAVersion, stepErr)
		}
		t.Skipf("building step-ca %s from the module proxy: %v", StepCAVersion, stepErr)
	}
	return stepBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// TestSmoke runs the whole tool at a tiny scale, as a user would
// (Main, --json), and checks that every figure is there and sane.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of CAs and simulated hosts")
	}
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("swtpm is not installed, and CI=true")
		}
		t.Skip("swtpm is not installed")
	}
	dsn := pgtest.Need(t)
	devidCA := gobuild.Binary(t, "github.com/devid-ssh/devid/cmd/devid-ca")
	step := stepCA(t)
	const hosts, quarantines = 40, 2
	var stdout, stderr bytes.Buffer
	code := Main([]string{"--json", "--devid-ca", devidCA, "--step-ca", step, "--postgres", dsn,
		"--hosts", "40", "--day", "30s", "--steady", "12s", "--recovery", "6s", "--throughput-time", "2s",
		"--concurrency", "4", "--swtpms", "1", "--attest-every", "100ms", "--quarantines", "2", "--krl-wait", "5s", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("devid-bench exited %d: %s", code, stderr.String())
	}
	var r Result
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	pos := func(name string, v float64) {
		t.Helper()
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	i := r.Issuance
	if i.Devid == nil || i.Step == nil {
		t.Fatalf("figure 1 missing: %+v", i)
	}
	pos("devid certificates/s", i.Devid.PerSecond)
	pos("step-ca certificates/s", i.Step.PerSecond)
	pos("ratio", i.Ratio)
	pos("devid CPU per certificate", i.Devid.CPUPerCert)
	pos("step-ca CPU per certificate", i.Step.CPUPerCert)
	pos("CPU ratio", i.CPURatio)
	if i.Devid.Errors+i.Step.Errors > 0 {
		t.Errorf("figure 1 errors: devid %d (%s), step-ca %d (%s)", i.Devid.Errors, i.Devid.FirstError, i.Step.Errors, i.Step.FirstError)
	}
	rn := r.Renewals
	pos("renewal rate", rn.RatePerSecond)
	pos("issuance p50", rn.Issuance.P50)
	pos("issuance p99", rn.Issuance.P99)
	pos("attestation p50", rn.Attestation.P50)
	pos("attestation p99", rn.Attestation.P99)
	if len(rn.AttestsByReplica) != 2 || rn.AttestsByReplica[0] == 0 || rn.AttestsByReplica[1] == 0 {
		t.Errorf("attestations by replica %v: want some on each of 2 (first error: %s)", rn.AttestsByReplica, rn.AttestationFirstErr)
	}
	rv := r.Revocation
	if rv.Error != "" {
		t.Errorf("figure 3: %s", rv.Error)
	}
	if rv.Hosts != hosts || rv.Events != quarantines || rv.Missed != 0 || rv.Latency.Count != hosts*quarantines {
		t.Errorf("figure 3: %d hosts × %d events, %d missed, %d delivered; want %d × %d, all delivered",
			rv.Hosts, rv.Events, rv.Missed, rv.Latency.Count, hosts, quarantines)
	}
	pos("revocation p99", rv.Latency.P99)
	if rv.Delivered.Count != hosts*quarantines {
		t.Errorf("figure 3: %d answers delivered, want %d", rv.Delivered.Count, hosts*quarantines)
	}
	if rv.Delivered.P99 > rv.Latency.P99 {
		t.Errorf("figure 3: delivered p99 %v after installed p99 %v", rv.Delivered.P99, rv.Latency.P99)
	}
	pos("host CPU per install", rv.HostCPU)
	if len(rv.ByReplica) != 2 || len(rv.DeliveredByReplica) != 2 {
		t.Errorf("revocation by replica: %d installed, %d delivered, want 2", len(rv.ByReplica), len(rv.DeliveredByReplica))
	}
	for j := 1; j < len(rv.Versions); j++ {
		if rv.Versions[j] <= rv.Versions[j-1] {
			t.Errorf("KRL versions %v do not grow", rv.Versions)
		}
	}
	of := r.Outage
	pos("outage", of.OutageSeconds)
	pos("steady renewal rate", of.SteadyRenewalRate)
	pos("renewal ratio", of.RenewalRatio)
	pos("steady KRL rate", of.SteadyKRLRate)
	pos("steady busiest renewal window", of.SteadyPeakRenewal)
	pos("steady busiest KRL window", of.SteadyPeakKRLRate)
	if of.SteadyPeakRenewal < of.SteadyRenewalRate || of.SteadyPeakKRLRate < of.SteadyKRLRate {
		t.Errorf("figure 4: a busiest window below the mean: renewals %v < %v or KRL %v < %v",
			of.SteadyPeakRenewal, of.SteadyRenewalRate, of.SteadyPeakKRLRate, of.SteadyKRLRate)
	}
	pos("KRL ratio", of.KRLRatio)
	if len(r.Resources.Replicas) != 2 {
		t.Fatalf("figure 5: %d replicas", len(r.Resources.Replicas))
	}
	for _, p := range r.Resources.Replicas {
		pos("replica RSS", p.RSSMiB)
		pos("replica peak RSS", p.HWMMiB)
		if p.Sockets < hosts/2 {
			t.Errorf("replica sockets %d with %d hosts long-polling on 2 replicas: want at least %d", p.Sockets, hosts, hosts/2)
		}
	}
	for _, g := range []string{"issuance_ratio_ge_0.9", "issuance_p99_lt_200ms", "attestation_p99_lt_200ms", "revocation_p99_le_2s", "revocation_installed_p99_le_2s", "outage_ratio_lt_2"} {
		if _, ok := r.Goals[g]; !ok {
			t.Errorf("goal %s not reported", g)
		}
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1. SSH certs/s", "2. issuance latency", "attestation latency", "3. revocation", "4. after a 1 h outage", "5. replica 2"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// TestUsage: bad flags are usage errors naming the flag, before anything
// starts.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--step-ca", "/bin/true"}, "--devid-ca is required"},
		{[]string{"--devid-ca", "/bin/true", "--step-ca", "/nonexistent"}, "--step-ca /nonexistent: not an executable file"},
		{[]string{"--devid-ca", "/bin/true", "--step-ca", "/bin/true", "--db", "bbolt"}, "--replicas 2: bbolt is one process's file"},
		{[]string{"--devid-ca", "/bin/true", "--step-ca", "/bin/true", "--db", "mysql"}, `--db "mysql"`},
		{[]string{"--devid-ca", "/bin/true", "--step-ca", "/bin/true", "--day", "1s"}, "--day 1s"},
		{[]string{"--devid-ca", "/bin/true", "--step-ca", "/bin/true", "extra"}, "unexpected arguments"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, stderr.String(), tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: stdout %q, want nothing", tc.args, stdout.String())
		}
	}
}
