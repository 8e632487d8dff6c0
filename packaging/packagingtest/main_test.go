package packagingtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

// nsEnv is set for a test binary re-executed by command: it then runs in a
// new mount namespace, where it mounts an empty tmpfs on /run, makes
// /run/sshd, and execs its arguments.
const nsEnv = "DEVID_PACKAGINGTEST_NS"

// nsSetupFailed is the exit status of a re-executed test binary that could
// not set up its namespace.
const nsSetupFailed = 125

func TestMain(m *testing.M) {
	if os.Getenv(nsEnv) == "1" {
		execInNamespace(os.Args[1:])
	}
	if upper := os.Getenv(hostEnv); upper != "" {
		runInHost(upper, os.Args[1:])
	}
	if records := os.Getenv(systemctlEnv); records != "" {
		os.Exit(fakeSystemctl(records, os.Args[1:]))
	}
	os.Exit(gobuild.Run(m))
}

func execInNamespace(argv []string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "packagingtest: namespace:", err)
		os.Exit(nsSetupFailed)
	}
	if err := mountRun(); err != nil {
		fail(err)
	}
	fail(syscall.Exec(argv[0], argv, envWithout(nsEnv)))
}

// mountRun mounts an empty tmpfs on /run holding /run/sshd, sshd's
// privilege separation directory, in a namespace of the test's own.
func mountRun() error {
	if err := syscall.Mount("tmpfs", "/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run: %w", err)
	}
	return os.Mkdir("/run/sshd", 0o755)
}

// envWithout is the environment without the variable name.
func envWithout(name string) []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
}

// command returns a command running argv such that sshd finds its privilege
// separation directory /run/sshd and, when asRoot is set, as uid 0. If that
// takes nothing, argv runs as it is; otherwise through a re-executed test
// binary in a new mount namespace (and, for a user other than root, a new
// user namespace where the user is root). When the system does not allow
// them, run reports errNamespace.
func command(asRoot bool, argv ...string) *exec.Cmd {
	_, err := os.Stat("/run/sshd")
	needUser := asRoot && os.Getuid() != 0
	// In a user namespace the host's /run/sshd belongs to an unmapped uid,
	// which sshd refuses, so a user namespace needs an own /run/sshd too.
	if err == nil && !needUser {
		return exec.Command(argv[0], argv[1:]...)
	}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(self, argv...)
	cmd.Env = append(os.Environ(), nsEnv+"=1")
	// Unshareflags with CLONE_NEWNS also makes every mount private first,
	// so the tmpfs on /run cannot propagate back to the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if os.Getuid() != 0 {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	return cmd
}

var errNamespace = errors.New("cannot give sshd a /run/sshd: there is none, and this system allows no mount or user namespace")

// run runs cmd and returns its combined output. A non-zero exit is an
// error carrying the output; a namespace that could not be set up is
// errNamespace.
func run(cmd *exec.Cmd) (string, error) {
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), nil
	}
	var ee *exec.ExitError
	if slices.Contains(cmd.Env, nsEnv+"=1") &&
		(cmd.Process == nil || errors.As(err, &ee) && ee.ExitCode() == nsSetupFailed) {
		return string(out), fmt.Errorf("%w: %v %s", errNamespace, err, out)
	}
	return string(out), fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
}

// needNamespace skips t, or fails it when CI=true, if err is errNamespace.
func needNamespace(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, errNamespace) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: run as root or create /run/sshd)", err)
		}
		t.Skip(err)
	}
}

// tool returns the path of the program name, from PATH or else from dirs
// (sshd is in /usr/sbin, not in a user's PATH on Debian). When it is
// missing it skips t, or fails it when CI=true, naming the Debian package.
func tool(t *testing.T, name, debianPackage string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found, and CI=true: install the Debian package %s", name, debianPackage)
	}
	t.Skipf("%s not found (Debian package %s)", name, debianPackage)
	return ""
}

// repoPath returns the path of a file given relative to the repository root.
func repoPath(rel string) string {
	return filepath.Join("..", "..", filepath.FromSlash(rel))
}

// readRepoFile returns a file of the repository, given relative to its root.
func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoPath(rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
