package fleetsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a CA process the bench runs: a devid-ca serve replica or a
// stock step-ca.
type server struct {
	name string
	bin  string
	args []string
	addr string // 127.0.0.1:PORT
	log  string // its standard error
	cmd  *exec.Cmd
	done chan error
}

func (s *server) URL() string { return "https://" + s.addr }

// start runs the process and waits until it answers /health.
func (s *server) start(ctx context.Context, roots *x509.CertPool) error {
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("fleetsim: %s: %w", s.name, err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("fleetsim: starting %s (%s): %w", s.name, s.bin, err)
	}
	f.Close()
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("fleetsim: %s exited before answering (%v); its log: %s\n%s", s.name, err, s.log, tail(s.log, 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := hc.Get(s.URL() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleetsim: %s does not answer %s/health after 2 minutes (last: %v); its log: %s", s.name, s.URL(), err, s.log)
		}
	}
}

// stop sends SIGTERM and waits for the process to exit.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		err = <-s.done
	}
	s.cmd = nil
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
		err = nil
	}
	return err
}

func (s *server) pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// ProcStats is what /proc says of a CA process.
type ProcStats struct {
	RSSMiB  float64 `json:"rss_mib"`
	HWMMiB  float64 `json:"hwm_mib"`
	Sockets int     `json:"sockets"` // every socket among its descriptors
	// HTTPSConns are its established TCP connections on its listening
	// port: one per long-polling host, and the rest.
	HTTPSConns int `json:"https_conns"`
	Threads    int `json:"threads"`
}

// procStats reads /proc for process pid, listening on port.
func procStats(pid, port int) (ProcStats, error) {
	var st ProcStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseFloat(f[0], 64)
		switch k {
		case "VmRSS":
			st.RSSMiB = n / 1024
		case "VmHWM":
			st.HWMMiB = n / 1024
		case "Threads":
			st.Threads = int(n)
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return st, err
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			st.Sockets++
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	// Established connections on the port, by ss (netlink): reading
	// /proc/net/tcp with 20,000 sockets takes minutes.
	out, err := exec.Command("ss", "-Htn", "state", "established", fmt.Sprintf("( sport = :%d )", port)).Output()
	if err != nil {
		return st, fmt.Errorf("fleetsim: ss (iproute2): %w", err)
	}
	st.HTTPSConns = strings.Count(string(out), "\n")
	return st, nil
}

func (s *server) port() int {
	_, p, _ := strings.Cut(s.addr, ":")
	n, _ := strconv.Atoi(p)
	return n
}

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: utime and stime are fields 14 and 15;
	// comm may hold spaces, so count from its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("fleetsim: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("fleetsim: /proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("fleetsim: /proc/%d/stat: %w", pid, err)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(u+s) * time.Second / hz, nil
}

// loadAvg is /proc/loadavg's 1-minute figure.
func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// freePort returns a loopback address nobody listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// selfCPU is the CPU time the bench's own process has used (0 if /proc
// cannot be read).
func selfCPU() time.Duration {
	d, _ := cpuTime(os.Getpid())
	return d
}
