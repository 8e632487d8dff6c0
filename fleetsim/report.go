package fleetsim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the figures as a table, each beside its goal.
func (r *Result) WriteTable(w io.Writer) error {
	c := r.Config
	fmt.Fprintf(w, "devid-bench: %d devices (%d workstations), %d devid-ca replica(s) on %s, stock step-ca on %s; 24h = %s (×%.0f); load average %.1f → %.1f\n\n",
		c.Hosts, c.Workstations, c.Replicas, c.DB, c.DB, c.Day, c.Compression, c.LoadAvg[0], c.LoadAvg[1])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ok := func(key string) string {
		if r.Goals[key] {
			return "met"
		}
		return "MISSED"
	}
	i := r.Issuance
	fmt.Fprintln(tw, "figure\tdevid\tstock step-ca / detail\tgoal\t")
	fmt.Fprintf(tw, "1. SSH certs/s, X5C /ssh/sign, %d workers\t%.1f/s (p50 %.1f, p99 %.1f ms)\t%.1f/s (p50 %.1f, p99 %.1f ms); ratio %.2f\t≥ 0.9× %s\t\n",
		c.Concurrency, i.Devid.PerSecond, i.Devid.Latency.P50, i.Devid.Latency.P99, i.Step.PerSecond, i.Step.Latency.P50, i.Step.Latency.P99, i.Ratio, ok("issuance_ratio_ge_0.9"))
	fmt.Fprintf(tw, "   CA process CPU per certificate\t%.2f ms\t%.2f ms; ratio %.2f\t\t\n", i.Devid.CPUPerCert, i.Step.CPUPerCert, i.CPURatio)
	rn := r.Renewals
	fmt.Fprintf(tw, "2. issuance latency, fleet renewing\tp50 %.1f ms, p99 %.1f ms\t%d issued at %.1f/s, %d failed\tp99 < 200 ms %s\t\n",
		rn.Issuance.P50, rn.Issuance.P99, rn.Issuance.Count, rn.RatePerSecond, rn.IssuanceFailed, ok("issuance_p99_lt_200ms"))
	fmt.Fprintf(tw, "   attestation latency (swtpm)\tp50 %.1f ms, p99 %.1f ms\t%d attestations %v by replica, %d failed\tp99 < 200 ms %s\t\n",
		rn.Attestation.P50, rn.Attestation.P99, rn.Attestation.Count, rn.AttestsByReplica, rn.AttestationFailed, ok("attestation_p99_lt_200ms"))
	rv := r.Revocation
	var by []string
	for j, s := range rv.ByReplica {
		by = append(by, fmt.Sprintf("replica %d p99 %.0f ms", j+1, s.P99))
	}
	var dby []string
	for j, s := range rv.DeliveredByReplica {
		dby = append(dby, fmt.Sprintf("replica %d p99 %.0f ms", j+1, s.P99))
	}
	fmt.Fprintf(tw, "3. revocation delivered to every long-poll\tp50 %.0f, p99 %.0f, max %.0f ms\t%d hosts × %d quarantines; %s\tp99 ≤ 2 s %s\t\n",
		rv.Delivered.P50, rv.Delivered.P99, rv.Delivered.Max, rv.Hosts, rv.Events, strings.Join(dby, ", "), ok("revocation_p99_le_2s"))
	fmt.Fprintf(tw, "   … and installed by every host\tp50 %.0f, p99 %.0f, max %.0f ms\t%d missed; %s; %.2f ms of the bench's CPU per host install\tp99 ≤ 2 s %s\t\n",
		rv.Latency.P50, rv.Latency.P99, rv.Latency.Max, rv.Missed, strings.Join(by, ", "), rv.HostCPU, ok("revocation_installed_p99_le_2s"))
	fmt.Fprintf(tw, "   issuance latency meanwhile\tp50 %.1f ms, p99 %.1f ms\t%d issued\t—\t\n", rv.Issuance.P50, rv.Issuance.P99, rv.Issuance.Count)
	of := r.Outage
	fmt.Fprintf(tw, "4. after a 1 h outage (%.1f s)\trenewals: busiest %.1f s window %.1f/s vs steady %.1f/s = %.2f×\tsteady mean %.1f/s (%.2f×)\t< 2× %s\t\n",
		of.OutageSeconds, of.WindowSeconds, of.AfterPeakRenewalRate, of.SteadyPeakRenewal, of.RenewalRatio, of.SteadyRenewalRate, of.RenewalRatioToMean, ok("outage_ratio_lt_2"))
	fmt.Fprintf(tw, "   KRL requests (not compressed)\tbusiest %.0f/s vs steady %.0f/s = %.2f×\tsteady mean %.0f/s (%.2f×)\t—\t\n",
		of.AfterPeakKRLRate, of.SteadyPeakKRLRate, of.KRLRatio, of.SteadyKRLRate, of.KRLRatioToMean)
	for j, p := range r.Resources.Replicas {
		fmt.Fprintf(tw, "5. replica %d, %d long-polls in all\tRSS %.0f MiB (peak %.0f)\t%d HTTPS connections, %d sockets, %d threads\t—\t\n",
			j+1, r.Resources.LongPolls, p.RSSMiB, p.HWMMiB, p.HTTPSConns, p.Sockets, p.Threads)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if r.Revocation.Error != "" {
		fmt.Fprintln(w, "figure 3 failed: "+r.Revocation.Error)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
	return nil
}
