package hostd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PIDFileName is the file in StateDir that says whether devid-hostd runs:
// the running daemon writes its process ID there and holds a POSIX write
// lock on it for as long as it runs. The kernel drops the lock when the
// process ends, however it ends (kill -9 included), so `devid-hostd status`
// and `devid-hostd renew` ask the kernel who holds the lock rather than
// trusting the file's content.
const PIDFileName = "hostd.pid"

// StateLock is a running daemon's claim on its StateDir.
type StateLock struct{ f *os.File }

// LockStateDir claims dir for this process: it creates dir and
// dir/hostd.pid, write-locks the file and writes the process ID. It fails if
// another process holds the lock (another devid-hostd with this stateDir).
func LockStateDir(dir string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("stateDir: %w", err)
	}
	path := filepath.Join(dir, PIDFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("stateDir: %w", err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		f.Close()
		if pid, _ := RunningPID(dir); pid > 0 {
			return nil, fmt.Errorf("stateDir %s: another devid-hostd (pid %d) is running with it", dir, pid)
		}
		return nil, fmt.Errorf("stateDir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stateDir: %s: %w", path, err)
	}
	return &StateLock{f: f}, nil
}

// Release gives the claim up (closing the file drops the lock). The file
// stays, with the last process ID in it.
func (l *StateLock) Release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// RunningPID returns the process ID of the devid-hostd running with
// stateDir dir, or 0 if none is: no process holds the lock on
// dir/hostd.pid.
func RunningPID(dir string) (int, error) {
	f, err := os.Open(filepath.Join(dir, PIDFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stateDir: %w", err)
	}
	defer f.Close()
	// F_GETLK asks without taking the lock: no window in which a daemon
	// starting now would find it taken.
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("stateDir: lock of %s: %w", f.Name(), err)
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	if lk.Pid > 0 {
		return int(lk.Pid), nil
	}
	// A holder in another PID namespace: fall back to the file.
	b, _ := os.ReadFile(f.Name())
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("stateDir: %s is locked but holds no process ID", f.Name())
	}
	return pid, nil
}

// LastPID returns the process ID in dir/hostd.pid: the devid-hostd that
// runs, or the last one that ran, with stateDir dir (0 if none is known).
func LastPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, PIDFileName))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// SameDir reports whether a and b name one directory: the same path once
// cleaned, or the same file (device and inode) however reached.
func SameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
