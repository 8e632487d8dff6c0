package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/dockertest"
	"github.com/devid-ssh/devid/packaging/containerpkgs"
)

// Bounds on hangs, never expected durations.
const (
	upTimeout   = 15 * time.Minute // building the roles' images and starting the set
	downTimeout = 5 * time.Minute
	waitLimit   = 5 * time.Minute // any condition polled
)

// set is one project of contrib/compose's set.
type set struct {
	t       *testing.T
	compose []string // the compose command
	file    string   // its docker-compose.yml, in a copy of contrib/compose
	project string
	env     []string
	ids     map[string]string // service: container ID
	network string
}

// up copies contrib/compose with devid's packages (pkgs) into a directory
// of t's, brings the set up on image with a project of its own and the
// certificate lifetime given, and takes it down with its volumes and
// images when t ends.
func up(t *testing.T, compose []string, image, pkgs string, lifetime time.Duration) *set {
	t.Helper()
	root, err := containerpkgs.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(root, "contrib", "compose")
	for _, name := range []string{"docker-compose.yml", "Dockerfile", "common.sh", "ca.sh", "host.sh", "workstation.sh"} {
		if err := copyFile(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(filepath.Join(dir, "packages"), os.DirFS(pkgs)); err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	s := &set{
		t: t, compose: compose, file: filepath.Join(dir, "docker-compose.yml"),
		project: "devidtest" + strings.ReplaceAll(strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:]), "-", "") + hex.EncodeToString(suffix),
		ids:     map[string]string{},
	}
	l := lifetime.String()
	s.env = append(os.Environ(), "DEVID_BASE="+image,
		"DEVID_LIFETIME_HOST="+l, "DEVID_LIFETIME_USER="+l, "DEVID_LIFETIME_DEVICE="+l)
	t.Cleanup(s.down)
	if out, err := s.run(upTimeout, "up", "-d", "--build"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, svc := range []string{"ca", "host-1", "host-2", "workstation"} {
		out, err := s.run(time.Minute, "ps", "-q", svc)
		if err != nil || out == "" {
			t.Fatalf("no container for %s: %v\n%s", svc, err, out)
		}
		s.ids[svc] = out
	}
	s.network = dockertest.Run(t, "inspect", "--format", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}", s.ids["ca"])
	return s
}

// run runs the compose command for the set.
func (s *set) run(limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	argv := append(append(s.compose[1:len(s.compose):len(s.compose)], "--ansi", "never", "-p", s.project, "-f", s.file), args...)
	cmd := exec.CommandContext(ctx, s.compose[0], argv...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// down takes the set down, with its volumes and images, having logged
// what its containers printed if the test failed.
func (s *set) down() {
	if s.t.Failed() {
		if out, err := s.run(time.Minute, "logs", "--no-color", "--tail", "150"); err == nil {
			s.t.Logf("the set's output:\n%s", out)
		}
	}
	if out, err := s.run(downTimeout, "down", "-v", "--rmi", "local", "--remove-orphans", "-t", "10"); err != nil {
		s.t.Errorf("%v\n%s", err, out)
	}
}

// exec runs a command in a service's container.
func (s *set) exec(svc string, args ...string) (string, error) {
	return dockertest.RunErr(append([]string{"exec", s.ids[svc]}, args...)...)
}

// hostStatus is devid-hostd's status.json on a host.
func (s *set) hostStatus(svc string) (*hostd.StatusData, error) {
	out, err := s.exec(svc, "cat", "/run/devid-hostd/status.json")
	if err != nil {
		return nil, err
	}
	var st hostd.StatusData
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("%s: status.json: %w", svc, err)
	}
	return &st, nil
}

// agentStatus is devid-agent's status.json on the workstation.
func (s *set) agentStatus() (*agentd.Status, error) {
	out, err := s.exec("workstation", "cat", "/home/alice/.local/state/devid/status.json")
	if err != nil {
		return nil, err
	}
	var st agentd.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("workstation: status.json: %w", err)
	}
	return &st, nil
}

// ssh logs in from the workstation, as alice, through devid-agent, to host.
func (s *set) ssh(host string) (string, error) {
	return s.exec("workstation", "runuser", "-u", "alice", "--", "ssh", host, "echo $(hostname) $(id -un)")
}

// connectionTrouble says whether ssh failed before sshd could decide on a
// login: sshd re-executing itself on a reload, or a name not resolved yet.
func connectionTrouble(out string) bool {
	for _, s := range []string{"Connection refused", "Connection closed by", "Connection reset", "kex_exchange_identification", "Could not resolve hostname", "Temporary failure in name resolution"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// login logs in to host and fails t unless it gets in; a connection
// refused or cut before sshd decides is tried again.
func (s *set) login(host string) {
	s.t.Helper()
	var out string
	var err error
	dockertest.Poll(s.t, waitLimit, "a login to "+host, func() (bool, string) {
		out, err = s.ssh(host)
		return err == nil || !connectionTrouble(err.Error()), fmt.Sprint(err)
	})
	if err != nil {
		s.t.Fatalf("login to %s: %v", host, err)
	}
	if want := host + " alice"; !strings.HasSuffix(out, want) {
		s.t.Fatalf("login to %s printed %q, want %q", host, out, want)
	}
}

// refused tries a login to host, which must be refused, and waits until
// the host's sshd log says why with want.
func (s *set) refused(host, want string) {
	s.t.Helper()
	since := time.Now().UTC().Format(time.RFC3339Nano)
	var err error
	dockertest.Poll(s.t, waitLimit, "a login attempt to "+host, func() (bool, string) {
		_, err = s.ssh(host)
		return err == nil || !connectionTrouble(err.Error()), fmt.Sprint(err)
	})
	if err == nil {
		s.t.Fatalf("login to %s: got in, want it refused", host)
	}
	if !strings.Contains(err.Error(), "Permission denied") {
		s.t.Fatalf("login to %s: %v, want Permission denied", host, err)
	}
	dockertest.Poll(s.t, waitLimit, host+"'s sshd saying "+want, func() (bool, string) {
		// sshd -e logs to the container's standard error.
		logs, err := exec.Command("docker", "logs", "--since", since, s.ids[host]).CombinedOutput()
		return err == nil && strings.Contains(string(logs), want), dockertest.LastLines(string(logs), 5)
	})
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	info, err := os.Stat(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, info.Mode().Perm())
}
