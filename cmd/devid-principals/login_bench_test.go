package main_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/krl"
	"golang.org/x/crypto/ssh"
)

// BenchmarkLogin measures what devid's host set-up costs a whole login: the
// real ssh client logging in to a real sshd (a daemon on a loopback port,
// LogLevel INFO) with a user certificate and running `true`, end to end, in
// two set-ups side by side:
//
//   - principals-file: TrustedUserCAKeys, and an AuthorizedPrincipalsFile
//     naming the certificate's device-ID principal: plain OpenSSH;
//   - devid: TrustedUserCAKeys, RevokedKeys (a KRL from package krl revoking
//     1,000 other devices' key IDs and 1,000 scattered serials of the same
//     CA), and devid-principals as AuthorizedPrincipalsCommand, run as
//     another user (nobody), with a 1,000-line policy whose matching line is
//     the last but one;
//
// and, for what any AuthorizedPrincipalsCommand costs whatever it does, a
// third:
//
//   - echo-command: TrustedUserCAKeys, and /bin/echo printing the device ID
//     as AuthorizedPrincipalsCommand (also run as nobody, no KRL): the floor
//     under devid, sshd running a command twice per login.
//
// The login is to a new account whose shell is /bin/sh, without a home
// directory: root's shell start-up files (whatever the machine has put in
// ~/.bashrc) would cost more than the rest of the login and vary more.
//
// The two set-ups alternate login by login, so both see the same machine;
// each sub-benchmark reports the median ms/login of its own logins, and
// devid and echo-command also the ratio of their median to principals-file's
// (devid's goal: at most 1.05). Each
// also reports cpu-ms/login, the CPU time (user and system) sshd's
// per-connection processes and the helper took, read from the daemon's
// reaped children's times in /proc (a mean, in 10 ms clock ticks): less
// moved by the machine's other tenants than the wall time.
func BenchmarkLogin(b *testing.B) {
	sshdtest.Need(b, sshdtest.SSHD, "ssh", "ssh-keygen")
	sshdtest.NeedRoot(b)
	l := newLoginBench(b)
	medians := map[string]time.Duration{}
	for _, name := range []string{"principals-file", "devid", "echo-command"} {
		b.Run(name, func(b *testing.B) {
			ts := make([]time.Duration, b.N)
			cpu0 := l.cpu(b, name)
			b.ResetTimer()
			for i := range b.N {
				// The other set-up's login, untimed, keeps the two
				// sub-benchmarks' machine alike.
				l.login(b, other(name))
				b.StartTimer()
				ts[i] = l.login(b, name)
				b.StopTimer()
			}
			cpu := l.cpu(b, name) - cpu0
			medians[name] = median(ts)
			b.ReportMetric(cpu.Seconds()*1000/float64(b.N), "cpu-ms/login")
			b.ReportMetric(medians[name].Seconds()*1000, "ms/login")
			if base := medians["principals-file"]; name != "principals-file" && base > 0 {
				b.ReportMetric(float64(medians[name])/float64(base), "ratio")
			}
		})
	}
}

// other is the set-up whose logins alternate with name's.
func other(name string) string {
	if name == "principals-file" {
		return "devid"
	}
	return "principals-file"
}

// loginBench is BenchmarkLogin's two sshds and the client's key.
type loginBench struct {
	servers map[string]*sshdtest.Server
	account string // logged in to
	key     string // private key; its certificate beside it (-cert.pub)
}

func newLoginBench(b *testing.B) *loginBench {
	account := "devid-bench"
	sshdtest.Account(b, account)
	dir := b.TempDir()
	keygen := func(args ...string) {
		b.Helper()
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ca := filepath.Join(dir, "ca")
	keygen("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", ca)
	dev := devID("laptop-1")
	key := filepath.Join(dir, "id")
	sshdtest.Keygen(b, key)
	keygen("-q", "-s", ca, "-I", dev, "-n", strings.Join([]string{dev, "user:bench@example.com", "login:" + account, "group:sre", "collection:laptops"}, ","), "-z", "7", key+".pub")

	// The policy: 998 lines that do not match, the one that does, and a
	// catch-all after it.
	var pol strings.Builder
	pol.WriteString("# account   principals the certificate must all carry\n")
	for i := range 998 {
		if i%2 == 0 {
			fmt.Fprintf(&pol, "user%d group:sre collection:laptops-%d\n", i, i)
		} else {
			fmt.Fprintf(&pol, "* group:team-%d login:{account}\n", i)
		}
	}
	pol.WriteString(account + " group:sre collection:laptops\n* login:{account} group:nobody\n")
	helper := sshdtest.InstallCommand(b, bin)
	policy := filepath.Join(filepath.Dir(helper), "principals.conf")
	if err := os.WriteFile(policy, []byte(pol.String()), 0o644); err != nil {
		b.Fatal(err)
	}

	// The KRL: 1,000 other devices revoked by key ID, and 1,000 scattered
	// serials, for the same CA.
	caPub, err := os.ReadFile(ca + ".pub")
	if err != nil {
		b.Fatal(err)
	}
	caKey, _, _, _, err := ssh.ParseAuthorizedKey(caPub)
	if err != nil {
		b.Fatal(err)
	}
	k := &krl.KRL{Version: 1, Generated: time.Unix(1700000000, 0)}
	sec := k.CertsFor(caKey)
	for i := range 1000 {
		sec.KeyIDs = append(sec.KeyIDs, devID(fmt.Sprintf("revoked-%d", i)))
		if err := sec.Serials.Add(uint64(1000+7*i), uint64(1000+7*i)); err != nil {
			b.Fatal(err)
		}
	}
	// And a few plain keys, so that the KRL has every kind of section
	// devid-hostd writes.
	for range 10 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		p, _ := ssh.NewPublicKey(pub)
		k.RevokedKeys = append(k.RevokedKeys, p)
	}
	body, err := k.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	revoked := filepath.Join(dir, "revoked.krl")
	if err := os.WriteFile(revoked, body, 0o644); err != nil {
		b.Fatal(err)
	}
	// Read as the account logged in to: beside the helper, where it may.
	principalsFile := filepath.Join(filepath.Dir(helper), "principals")
	if err := os.WriteFile(principalsFile, []byte(dev+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}

	l := &loginBench{account: account, key: key, servers: map[string]*sshdtest.Server{
		"principals-file": sshdtest.Start(b, sshdtest.Options{Lines: []string{
			"TrustedUserCAKeys " + ca + ".pub",
			"AuthorizedPrincipalsFile " + principalsFile,
		}, LogLevel: "INFO"}),
		"devid": sshdtest.Start(b, sshdtest.Options{Lines: []string{
			"TrustedUserCAKeys " + ca + ".pub",
			"RevokedKeys " + revoked,
			"AuthorizedPrincipalsCommand " + helper + " --policy " + policy + " %u %t %k",
			"AuthorizedPrincipalsCommandUser nobody",
		}, LogLevel: "INFO"}),
		"echo-command": sshdtest.Start(b, sshdtest.Options{Lines: []string{
			"TrustedUserCAKeys " + ca + ".pub",
			"AuthorizedPrincipalsCommand /bin/echo " + dev,
			"AuthorizedPrincipalsCommandUser nobody",
		}, LogLevel: "INFO"}),
	}}
	for range 3 { // warm up; and each must let the certificate in
		for name := range l.servers {
			l.login(b, name)
		}
	}
	return l
}

// cpu is the CPU time the named set-up's sshd daemon's reaped children
// (each connection's sshd, and what it ran) have taken so far: cutime and
// cstime in /proc/PID/stat.
func (l *loginBench) cpu(b *testing.B, name string) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", l.servers[name].PID))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, "(sshd)", which could hold spaces.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	// cutime and cstime are fields 16 and 17 of stat(5), counting from 1
	// with the PID; f[0] is field 3, the state.
	var ticks int64
	for _, s := range f[13:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat: %q: %v", l.servers[name].PID, stat, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// login logs in as root with the certificate to the named set-up's sshd
// and returns how long ssh took.
func (l *loginBench) login(b *testing.B, name string) time.Duration {
	s := l.servers[name]
	args := s.Args(sshdrun.Client{User: l.account, Identity: l.key, Certificate: l.key + "-cert.pub"})
	start := time.Now()
	out, err := exec.Command("ssh", args...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		log, _ := os.ReadFile(s.Log)
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		b.Fatalf("%s: ssh: %v\n%s\nsshd log, last lines:\n%s", name, err, out, strings.Join(lines[max(0, len(lines)-10):], "\n"))
	}
	return d
}
