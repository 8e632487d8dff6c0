// Package procstat reads what benchmarks report of an idle daemon from
// /proc: its resident memory and how often its threads wake up.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Idle measures the process pid over d: its resident memory at the end
// (MiB) and its wakeups per second, counted as the voluntary and
// involuntary context switches of all its threads.
func Idle(pid int, d time.Duration) (rssMiB, wakeupsPerSec float64, err error) {
	c0, err := CtxSwitches(pid)
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(d) // measuring an idle process: there is nothing to wait on
	c1, err := CtxSwitches(pid)
	if err != nil {
		return 0, 0, err
	}
	rss, err := field(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	if err != nil {
		return 0, 0, err
	}
	return float64(rss) / 1024, float64(c1-c0) / d.Seconds(), nil
}

// CtxSwitches sums the voluntary and involuntary context switches of all
// of a process's threads.
func CtxSwitches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("procstat: no threads for pid %d (%v)", pid, err)
	}
	var n int64
	for _, f := range tasks {
		v, _ := field(f, "voluntary_ctxt_switches:") // a thread may have exited
		nv, _ := field(f, "nonvoluntary_ctxt_switches:")
		n += v + nv
	}
	return n, nil
}

// field reads a numeric field of a /proc status file.
func field(file, name string) (int64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("procstat: %s: no %s", file, name)
}
