// Package dockertest is the container engine for tests: whether there is
// one (a test skips without it on a laptop, and fails when CI=true), the
// compose command (docker-compose, or the docker compose plugin), devid's
// Debian images (package debimage, built once and kept), and commands run
// with their output in the failure.
//
//	func TestX(t *testing.T) {
//		dockertest.Need(t)
//		img := dockertest.Image(t, "trixie")
//		id := dockertest.Run(t, "run", "-d", "--rm", img, "sleep", "infinity")
//		…
//	}
package dockertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/debimage"
)

// Need skips t unless a container engine answers (`docker version`), and
// fails it instead when CI=true.
func Need(t testing.TB) {
	t.Helper()
	if err := engine(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dockertest: %v, and CI=true", err)
		}
		t.Skipf("dockertest: %v", err)
	}
}

func engine() error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("no docker command: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker version: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Compose returns the compose command: docker-compose if installed,
// else the docker compose plugin if it answers. It skips t if neither
// does, and fails it instead when CI=true.
func Compose(t testing.TB) []string {
	t.Helper()
	cmd, err := ComposeCommand()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dockertest: %v, and CI=true", err)
		}
		t.Skipf("dockertest: %v", err)
	}
	return cmd
}

// ComposeCommand finds the compose command (see Compose).
func ComposeCommand() ([]string, error) {
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}, nil
	}
	return nil, fmt.Errorf("neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)")
}

// NeedRoot skips t unless it runs as root (debootstrap needs it to build
// an image), and fails it instead when CI=true.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("dockertest: building images needs root (debootstrap), and CI=true")
		}
		t.Skip("dockertest: building images needs root (debootstrap)")
	}
}

// BuildTimeout bounds the build of one image (debootstrap from the
// mirror, about 2 minutes on 2 cores): it only bounds a hang.
const BuildTimeout = 20 * time.Minute

// Image returns devid's default image of suite (debimage.Default),
// building it if the engine does not have it yet (which needs root and
// debootstrap: t skips without them, or fails when CI=true). It fails t if
// the build fails.
func Image(t testing.TB, suite string) string {
	t.Helper()
	return SpecImage(t, debimage.Default(suite))
}

// SpecImage is Image for any Spec.
func SpecImage(t testing.TB, s debimage.Spec) string {
	t.Helper()
	Need(t)
	ref := s.Ref()
	if out, err := exec.Command("docker", "image", "ls", "--quiet", ref).Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		return ref
	}
	NeedRoot(t)
	if _, err := exec.LookPath("debootstrap"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dockertest: building %s: debootstrap not installed, and CI=true", ref)
		}
		t.Skipf("dockertest: building %s: debootstrap not installed (apt-get install debootstrap)", ref)
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	b := &debimage.Builder{Log: logWriter{t}}
	ref, err := b.Ensure(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// logWriter is t.Log as an io.Writer, one call per line.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Timeout bounds one docker command that Run and RunErr run: it only
// bounds a hang.
const Timeout = 5 * time.Minute

// Run runs docker with args and returns its standard output, trimmed; it
// fails t if the command fails, with its output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := RunErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunErr runs docker with args and returns its standard output, trimmed,
// or an error with the command and its output.
func RunErr(args ...string) (string, error) {
	return Command(context.Background(), "docker", args...)
}

// Command runs name with args (within Timeout) and returns its standard
// output, trimmed, or an error with the command and its output.
func Command(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("%s: %w\n%s%s", strings.Join(cmd.Args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Start runs a container in the background (docker run -d ARGS…) and
// returns its ID; t's cleanup removes it with its anonymous volumes,
// logging what it printed if t failed.
func Start(t testing.TB, args ...string) string {
	t.Helper()
	id := Run(t, append([]string{"run", "-d", "--label", "devid.test=" + t.Name()}, args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := exec.Command("docker", "logs", "--tail", "100", id).CombinedOutput(); err == nil && len(out) > 0 {
				t.Logf("container %.12s's output:\n%s", id, out)
			}
		}
		if _, err := RunErr("rm", "-f", "-v", id); err != nil {
			t.Error(err)
		}
	})
	return id
}

// Exec runs a command in a running container (docker exec) and returns
// its output, trimmed; it fails t if the command fails.
func Exec(t testing.TB, container string, cmd ...string) string {
	t.Helper()
	return Run(t, append([]string{"exec", container}, cmd...)...)
}

// Install copies the packages in dir (package containerpkgs stages them)
// into the running container and installs those named (devid, devid-host,
// devid-ca, devid-agent) with their install-devid.sh. It fails t if they
// do not install. (Not through /tmp: systemd mounts a tmpfs there on
// Debian 13, hiding what docker cp writes.)
func Install(t testing.TB, container, dir string, packages ...string) {
	t.Helper()
	const in = "/var/tmp/devid-packages"
	Run(t, "cp", dir+"/.", container+":"+in)
	Run(t, append([]string{"exec", container, "sh", in + "/install-devid.sh", in}, packages...)...)
	Run(t, "exec", container, "rm", "-rf", in)
}

// SystemdArgs returns the docker run options under which a container of
// devid's images runs systemd as PID 1 (/lib/systemd/systemd).
//
// On this project's engine (docker 20.10, cgroup v1, cgroupfs driver):
// systemd needs CAP_SYS_ADMIN (its mounts, the units' sandboxing), no
// seccomp filter of docker's (it installs the units' own), tmpfs on /run
// and /run/lock, and the host's cgroup hierarchies, read-only (systemd 252
// and 257 reach "running" with them). It also needs CAP_SYS_PTRACE, which
// systemd has on a real machine, for a unit with both PrivateUsers= and
// ProtectProc= (devid-ca.service): systemd writes the service's UID map
// from a helper left in its own user namespace, through /proc/PID of the
// service, which ProtectProc='s procfs shows that helper only with
// CAP_SYS_PTRACE over the new namespace; without it the unit fails with
// 217/USER, "Failed to set up user namespacing: No such file or
// directory" (systemd 252 and 257). --privileged is no option there: the
// engine's capability bounding set lacks CAP_SYS_RESOURCE, and
// `docker run --privileged` fails with "unable to apply caps: operation
// not permitted".
//
// On an engine with cgroup v2 (docker info: CgroupVersion 2), systemd must
// be able to write its cgroups: the host's cgroup namespace and the
// hierarchy read-write. That variant has not been run here.
func SystemdArgs(t testing.TB) []string {
	t.Helper()
	args := []string{
		"--cap-add", "SYS_ADMIN",
		"--cap-add", "SYS_PTRACE", // PrivateUsers= with ProtectProc=
		"--security-opt", "seccomp=unconfined",
		"--tmpfs", "/run", "--tmpfs", "/run/lock",
		"--stop-signal", "SIGRTMIN+3", // systemd's own "halt"
	}
	switch v := Run(t, "info", "--format", "{{.CgroupVersion}}"); v {
	case "1":
		return append(args, "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro")
	case "2":
		return append(args, "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw")
	default:
		t.Fatalf("dockertest: the engine's cgroup version is %q: want 1 or 2", v)
		return nil
	}
}

// Poll calls cond every half second until it holds, failing t after limit
// with cond's last word. The limit only bounds a hang.
func Poll(t testing.TB, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", limit, what, detail)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// PresentedSerial is the serial of the ECDSA host certificate that host's
// sshd presents, as ssh-keyscan -c run in container sees it (OpenSSH 9.2
// and 10.0 print "TYPE-cert-v01@openssh.com BASE64", which ssh-keygen -L
// reads).
func PresentedSerial(container, host string) (uint64, error) {
	out, err := RunErr("exec", container, "sh", "-c", "ssh-keyscan -c -t ecdsa "+host+" 2>/dev/null | "+
		`awk '{ for (i = 1; i < NF; i++) if ($i ~ /-cert-v01@openssh.com$/) { print $i, $(i+1); exit } }' | ssh-keygen -L -f -`)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Serial: "); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no host certificate from %s in %q", host, out)
}

// LastLines is the last n lines of s, for a failure message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
