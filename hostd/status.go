package hostd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// StatusData is what `devid-hostd status` shows, kept in
// StateDir/status.json.
type StatusData struct {
	Updated  time.Time   `json:"updated"`
	PID      int         `json:"pid"`
	HostCert *CertStatus `json:"hostCertificate,omitempty"`
	UserCA   int         `json:"userCaKeys"`
	// KRLVersion and KRLGenerated describe the KRL in RevokedKeys.
	KRLVersion   uint64                `json:"krlVersion"`
	KRLGenerated time.Time             `json:"krlGenerated,omitzero"`
	Tasks        map[string]TaskStatus `json:"tasks"`
	Restored     map[string]int        `json:"filesRestored,omitempty"`
	// SSHDReloads counts the reloads of sshd devid-hostd asked for (and
	// sshd's reload mechanism accepted) since it started: one after each
	// certificate it installed.
	SSHDReloads uint64 `json:"sshdReloads"`
}

// CertStatus describes the host certificate in place.
type CertStatus struct {
	File        string    `json:"file"`
	Serial      uint64    `json:"serial,string"` // a string: jq would round it
	KeyID       string    `json:"keyId"`
	Principals  []string  `json:"principals"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	NextRenewal time.Time `json:"nextRenewal"`
}

// Print writes c's lines of a status, labelled label, to a tabwriter; in
// says when a future time is. A nil c is "none yet".
func (c *CertStatus) Print(tw io.Writer, label string, in func(time.Time) string) {
	if c == nil {
		fmt.Fprintf(tw, "%s\tnone yet\n", label)
		return
	}
	fmt.Fprintf(tw, "%s\t%s\n", label, c.File)
	fmt.Fprintf(tw, "  serial\t%d\n", c.Serial)
	fmt.Fprintf(tw, "  key ID\t%s\n", c.KeyID)
	fmt.Fprintf(tw, "  principals\t%s\n", strings.Join(c.Principals, ", "))
	fmt.Fprintf(tw, "  expires\t%s\n", in(c.NotAfter))
	fmt.Fprintf(tw, "  next renewal\t%s\n", in(c.NextRenewal))
}

// ReadStatus reads the status file in dir.
func ReadStatus(dir string) (*StatusData, error) {
	b, err := os.ReadFile(filepath.Join(dir, "status.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no status in %s: is devid-hostd running (and with this stateDir)?", dir)
	}
	if err != nil {
		return nil, err
	}
	var d StatusData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "status.json"), err)
	}
	return &d, nil
}

// Print writes a human summary of d; pid is the running daemon's process
// ID (RunningPID), 0 if none runs, and last the last one to run (LastPID;
// 0 if unknown).
func (d *StatusData) Print(w io.Writer, now time.Time, pid, last int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), now.Sub(t).Round(time.Second))
	}
	in := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%s (in %s)", t.Local().Format(time.RFC3339), t.Sub(now).Round(time.Second))
	}
	// The status file may be an earlier run's: a daemon killed, or one
	// just started, before it wrote its own.
	earlier := ""
	if running := max(pid, last); running != 0 && d.PID != running {
		earlier = fmt.Sprintf(" by an earlier run (pid %d)", d.PID)
	}
	if pid != 0 {
		fmt.Fprintf(tw, "devid-hostd\trunning, pid %d, status updated%s %s\n", pid, earlier, ago(d.Updated))
	} else {
		if last == 0 {
			last = d.PID
		}
		fmt.Fprintf(tw, "devid-hostd\tnot running (was pid %d), status updated%s %s\n", last, earlier, ago(d.Updated))
	}
	d.HostCert.Print(tw, "host certificate", in)
	fmt.Fprintf(tw, "sshd reloads\t%d\n", d.SSHDReloads)
	fmt.Fprintf(tw, "user CA keys\t%d\n", d.UserCA)
	fmt.Fprintf(tw, "KRL\tversion %d, built %s\n", d.KRLVersion, ago(d.KRLGenerated))
	names := make([]string, 0, len(d.Tasks))
	for n := range d.Tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ts := d.Tasks[n]
		fmt.Fprintf(tw, "task %s\tlast success %s\n", n, ago(ts.LastSuccess))
		if !ts.LastFailure.IsZero() {
			fmt.Fprintf(tw, "\tlast failure %s: %s\n", ago(ts.LastFailure), ts.LastError)
		}
	}
	for f, n := range d.Restored {
		fmt.Fprintf(tw, "restored\t%s: %d time(s)\n", f, n)
	}
	tw.Flush()
}
