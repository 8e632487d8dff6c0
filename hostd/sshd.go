package hostd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
)

// SSHD checks sshd's configuration and reloads sshd.
type SSHD interface {
	// Check runs `sshd -t` on the real configuration.
	Check(ctx context.Context) error
	// Reload makes sshd reread its configuration and files.
	Reload(ctx context.Context) error
}

// NewSSHD returns the SSHD the configuration describes.
func NewSSHD(c *Config) SSHD {
	return &sshd{binary: c.SSHD.Binary, config: c.SSHD.Config, unit: c.Reload.SystemdUnit, pidFile: c.Reload.PIDFile, cert: c.HostCertificate}
}

type sshd struct {
	binary, config string
	unit, pidFile  string
	cert           string // the host certificate file
}

func (s *sshd) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.binary, "-t", "-f", s.config).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -t -f %s: %v: %s", s.binary, s.config, err, bytes.TrimSpace(out))
	}
	// sshd -t exits 0 when it cannot use a host certificate, and only
	// says so: such a complaint is a failure too.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, s.cert) || strings.Contains(strings.ToLower(line), "host certificate") {
			return fmt.Errorf("%s -t -f %s: %s", s.binary, s.config, strings.TrimSpace(line))
		}
	}
	return nil
}

func (s *sshd) Reload(ctx context.Context) error {
	if s.pidFile != "" {
		b, err := os.ReadFile(s.pidFile)
		if err != nil {
			return fmt.Errorf("reload sshd: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return fmt.Errorf("reload sshd: %s does not hold a process ID", s.pidFile)
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("reload sshd: SIGHUP to pid %d (from %s): %w", pid, s.pidFile, err)
		}
		return nil
	}
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("reload sshd: systemd D-Bus: %w", err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.ReloadUnitContext(ctx, s.unit, "replace", done); err != nil {
		return fmt.Errorf("reload sshd: systemd: reload %s: %w", s.unit, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("reload sshd: systemd: reload %s: %s", s.unit, res)
		}
		return nil
	case <-ctx.Done():
		return errors.Join(errors.New("reload sshd: systemd did not answer"), ctx.Err())
	}
}
