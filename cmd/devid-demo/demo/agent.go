package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/agentd"
)

// agent is a running devid-agent.
type agent struct {
	config, stateDir, socket string
	pid                      int
}

// agentConfig writes a devid-agent configuration for the TPM at tpmAddr
// with its state in stateDir, and returns its path.
func (d *demo) agentConfig(name, caURL, caDir, tpmAddr, stateDir, tokenFile string) (string, error) {
	dir := filepath.Join(d.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	cfg := map[string]any{"version": 1, "caUrl": caURL, "root": filepath.Join(caDir, "certs", "root_ca.crt"), "tpm": tpmAddr,
		"stateDir": stateDir, "socket": filepath.Join(dir, "agent.sock")}
	if tokenFile != "" {
		cfg["enrolment"] = map[string]string{"tokenFile": tokenFile}
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	file := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	return file, nil
}

// startAgent starts devid-agent for the TPM at tpmAddr, with the
// enrolment token in tokenFile, and waits for its certificate.
func (d *demo) startAgent(ctx context.Context, name, caURL, caDir, tpmAddr, tokenFile string) (*agent, error) {
	a := &agent{stateDir: filepath.Join(d.Dir, name, "state"), socket: filepath.Join(d.Dir, name, "agent.sock")}
	var err error
	if a.config, err = d.agentConfig(name, caURL, caDir, tpmAddr, a.stateDir, tokenFile); err != nil {
		return nil, err
	}
	d.say("devid-agent's configuration (one file for the machine; the paths are the user's):")
	d.show(a.config)
	logFile := filepath.Join(d.Dir, name, "agent.log")
	stop, pid, err := d.startPID(ctx, logFile, "devid-agent", "run", "--config", a.config)
	if err != nil {
		return nil, err
	}
	d.cleanups = append(d.cleanups, stop)
	a.pid = pid
	if err := waitFile(ctx, 3*time.Minute, func() bool {
		st, err := agentd.ReadStatus(a.stateDir)
		return err == nil && st.PID == pid && st.Certificate != nil && st.HostCAKeys > 0 && st.KRLVersion > 0
	}); err != nil {
		return nil, fmt.Errorf("devid-agent got no certificate: %w (log: %s)", err, logFile)
	}
	return a, nil
}

// renewNow asks the agent to renew (SIGUSR1) and waits for the outcome.
func (a *agent) renewNow(ctx context.Context) error {
	before, err := agentd.ReadStatus(a.stateDir)
	if err != nil {
		return err
	}
	if err := syscall.Kill(a.pid, syscall.SIGUSR1); err != nil {
		return err
	}
	last := func(s *agentd.Status) time.Time {
		t := s.Tasks[agentd.TaskCert]
		if t.LastFailure.After(t.LastSuccess) {
			return t.LastFailure
		}
		return t.LastSuccess
	}
	return waitFile(ctx, 3*time.Minute, func() bool {
		st, err := agentd.ReadStatus(a.stateDir)
		return err == nil && last(st).After(last(before))
	})
}

// krlVersion is the version of the KRL the agent has.
func (a *agent) krlVersion() uint64 {
	return krlVersion(filepath.Join(a.stateDir, "revoked_host_keys.krl"))
}

// copyDir copies the regular files of from into to, as a thief would.
func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
