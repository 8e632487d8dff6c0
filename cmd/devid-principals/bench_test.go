package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/gobuild"
	"golang.org/x/crypto/ssh"
)

// BenchmarkExec measures what sshd pays per call of the helper: the time to
// exec devid-principals and read its answer, against a Go program that does
// nothing (func main(){}), built the same way (go build -trimpath). The
// policy has 1,000 lines and the login matches the last one; the helper
// runs as sshd runs it (no --log: syslog, or standard error where there is
// none). The two programs alternate, so both see the same machine, and the
// figures are medians, which the other tenants of a shared machine move
// less than means.
//
// Reported: ms/exec of each, and their ratio (goal: at most 1.2).
func BenchmarkExec(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module empty\n\ngo 1.26\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	empty := gobuild.Binary(b, dir)

	var pol strings.Builder
	for i := range 999 {
		if i%2 == 0 {
			fmt.Fprintf(&pol, "user%d group:sre collection:laptops-%d\n", i, i)
		} else {
			fmt.Fprintf(&pol, "* group:team-%d login:{account}\n", i)
		}
	}
	pol.WriteString("* login:{account}\n")
	policyFile := file(b, dir, "principals.conf", pol.String())
	dev := devID("laptop-1")
	c := newCert(b, ssh.UserCert, dev, dev, "login:alice", "group:sre", "collection:laptops")
	helper := []string{bin, "--policy", policyFile, "alice", c.typ, c.b64}
	if r := run(b, helper[1:]...); r.stdout != dev+"\n" {
		b.Fatalf("the helper does not allow the login: %q %s", r.stdout, r.stderr)
	}

	execute := func(args []string) time.Duration {
		var out bytes.Buffer
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout = &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for range 20 { // warm the page cache
		execute([]string{empty})
		execute(helper)
	}
	tEmpty, tHelper := make([]time.Duration, b.N), make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		tEmpty[i] = execute([]string{empty})
		tHelper[i] = execute(helper)
	}
	b.StopTimer()
	me, mh := median(tEmpty), median(tHelper)
	b.ReportMetric(me.Seconds()*1000, "ms/exec-empty")
	b.ReportMetric(mh.Seconds()*1000, "ms/exec-principals")
	b.ReportMetric(float64(mh)/float64(me), "ratio")
}

// median returns the median of ts (sorting ts).
func median(ts []time.Duration) time.Duration {
	slices.Sort(ts)
	return ts[len(ts)/2]
}
