package fleetsim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Main is devid-bench: it parses args, runs, and prints the figures as a
// table, or as JSON with --json. It returns the exit code: 0, 1 on a
// failure, 2 on a usage error. A goal missed is not a failure: the
// figures say so.
func Main(args []string, stdout, stderr io.Writer) int {
	o := DefaultOptions()
	fs := flag.NewFlagSet("devid-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: devid-bench --devid-ca BIN --step-ca BIN [flags]

Simulates a fleet of hosts and workstations with devid's own client code
(devid-hostd's renewal and KRL tasks, enroll.Client) against devid-ca
replicas on one PostgreSQL database (or one on bbolt), beside a stock
step-ca doing the same X5C /ssh/sign, all on loopback, and prints:
  1. SSH certificates per second, devid-ca vs step-ca;
  2. issuance and attestation (swtpm) latency while the fleet renews;
  3. time for a quarantine to reach every host's KRL long-poll;
  4. the renewal and KRL request rates after a 1-hour CA outage vs steady;
  5. each replica's RSS, sockets and threads with every host long-polling.
Time is compressed: --day is what 24 hours become.

flags:
`)
		fs.PrintDefaults()
	}
	var asJSON, verbose bool
	fs.IntVar(&o.Hosts, "hosts", o.Hosts, "simulated devices")
	fs.Float64Var(&o.Workstations, "workstations", o.Workstations, "fraction of the devices that are workstations (user certificates)")
	fs.IntVar(&o.Replicas, "replicas", o.Replicas, "devid-ca serve replicas (1 with --db bbolt)")
	fs.StringVar(&o.DB, "db", o.DB, "store: postgresql or bbolt")
	fs.StringVar(&o.PostgresDSN, "postgres", o.PostgresDSN, "PostgreSQL server connection string (a role that may create databases)")
	fs.StringVar(&o.DevidCA, "devid-ca", "", "devid-ca binary (required)")
	fs.StringVar(&o.StepCA, "step-ca", "", "stock step-ca binary (required)")
	fs.StringVar(&o.Dir, "dir", "", "work directory (default: a new one in /dev/shm, removed at the end)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (CA logs, configs)")
	fs.DurationVar(&o.Day, "day", o.Day, "what 24 hours become (the host certificate lifetime); all hosts' times scale with it")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "figure 1: concurrent requests")
	fs.DurationVar(&o.ThroughputTime, "throughput-time", o.ThroughputTime, "figure 1: time per CA")
	fs.IntVar(&o.SwTPMs, "swtpms", o.SwTPMs, "software TPMs attesting in a loop")
	fs.DurationVar(&o.AttestEvery, "attest-every", o.AttestEvery, "each swtpm attests at most once every this long")
	fs.IntVar(&o.Quarantines, "quarantines", o.Quarantines, "figure 3: devices quarantined one after another")
	fs.DurationVar(&o.Steady, "steady", 0, "steady phase after the warm-up (default: one host renewal cycle, 0.64 of --day)")
	fs.DurationVar(&o.Recovery, "recovery", 0, "time measured after the outage (default: half a host renewal cycle)")
	fs.DurationVar(&o.KRLWait, "krl-wait", o.KRLWait, "the hosts' KRL long-poll wait")
	fs.BoolVar(&asJSON, "json", false, "print the figures as JSON")
	fs.BoolVar(&verbose, "v", false, "log progress on standard error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "devid-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := o.check(); err != nil {
		fmt.Fprintf(stderr, "devid-bench: %v\n", err)
		return 2
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// Ten thousand hosts' goroutines make a large heap: collect less
	// often, so that the bench's GC takes less CPU from the CAs.
	debug.SetGCPercent(1000)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "devid-bench: %v\n", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "devid-bench: %v\n", err)
			return 1
		}
		return 0
	}
	if err := res.WriteTable(stdout); err != nil {
		fmt.Fprintf(stderr, "devid-bench: %v\n", err)
		return 1
	}
	return 0
}
