package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/krl"
)

// host is the demo's host: sshd on a loopback port, its files kept by
// devid-hostd, logins decided by devid-principals.
type host struct {
	dir               string
	krlFile, certFile string
	sshd              *sshdrun.Server
}

// canRunSSHD says whether this machine can run the host part: sshd needs
// root (privilege separation), and sshd needs a root-owned principals
// helper outside /tmp.
func canRunSSHD() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "sshd needs root"
	}
	for _, tool := range []string{sshdrun.SSHD, "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false, tool + " is not installed (apt-get install openssh-server openssh-client)"
		}
	}
	return true, ""
}

// startHost installs devid-principals, starts sshd and devid-hostd, and
// waits until the host certificate and the KRL are in place.
func (d *demo) startHost(ctx context.Context, caDir, caURL, tpmAddr, tpmHostKey, tokenFile string) (*host, error) {
	h := &host{dir: filepath.Join(d.Dir, "host")}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	// sshd runs the helper only from a root-owned directory that nobody
	// else may write, outside /tmp.
	helper, removeHelper, err := sshdrun.InstallCommand(filepath.Join(d.Bin, "devid-principals"), "devid-demo-")
	if err != nil {
		return nil, err
	}
	d.cleanups = append(d.cleanups, removeHelper)
	libexec := filepath.Dir(helper)
	policy := filepath.Join(libexec, "principals.conf")
	policyText := "# account  principals the certificate must all carry\nroot  group:sre key:tpm\n*     login:{account} key:tpm\n"
	if err := os.WriteFile(policy, []byte(policyText), 0o644); err != nil {
		return nil, err
	}
	d.say("The principals policy (who may log in to which account), read at every login:")
	d.show(policy)

	managed := filepath.Join(h.dir, "devid")
	sshdHostKey := filepath.Join(managed, "ssh_host_tpm_key")
	agentSock := filepath.Join(h.dir, "run", "hostkey.sock")
	h.certFile = sshdHostKey + "-cert.pub"
	h.krlFile = filepath.Join(managed, "revoked.krl")
	userCA := filepath.Join(managed, "user_ca.pub")
	// sshd starts before devid-hostd has written its files: until the KRL
	// is there it refuses every public-key login, as it must. Its own
	// (file) host key is for clients that know it; the TPM key, whose
	// public half devid-hostd writes, is the one with the certificate.
	h.sshd, err = sshdrun.Start(ctx, sshdrun.Options{Dir: h.dir, LogLevel: "VERBOSE", Lines: []string{
		"HostKey " + sshdHostKey, "HostKeyAgent " + agentSock,
		"HostCertificate " + h.certFile,
		"TrustedUserCAKeys " + userCA, "RevokedKeys " + h.krlFile,
		"AuthorizedPrincipalsCommand " + helper + " --policy " + policy + " %u %t %k",
		"AuthorizedPrincipalsCommandUser nobody",
		"AuthorizedKeysFile none",
	}})
	if err != nil {
		return nil, err
	}
	d.cleanups = append(d.cleanups, h.sshd.Stop)
	d.say("")
	d.say("sshd's configuration: plain OpenSSH, pointed at the files devid-hostd keeps:")
	d.show(h.sshd.Config)
	fmt.Fprintf(d.Out, "\n$ %s -D -f %s -E %s\n(running in the background, pid %d)\n", sshdrun.SSHD, h.sshd.Config, h.sshd.Log, h.sshd.PID)

	cfg := map[string]any{
		"version": 1, "caUrl": caURL, "root": filepath.Join(caDir, "certs", "root_ca.crt"), "tpm": tpmAddr,
		"tpmHostKey": tpmHostKey, "sshdHostKey": sshdHostKey, "hostKeyAgent": agentSock, "hostCertificate": h.certFile,
		"trustedUserCAKeys": userCA, "revokedKeys": h.krlFile,
		"sshd":           map[string]string{"binary": sshdrun.SSHD, "config": h.sshd.Config},
		"reload":         map[string]string{"pidFile": h.sshd.PIDFile},
		"metricsAddress": "off", "stateDir": filepath.Join(h.dir, "run"),
		"enrolment": map[string]string{"tokenFile": tokenFile, "name": "web-1"},
	}
	cb, _ := json.MarshalIndent(cfg, "", "  ")
	hostdConfig := filepath.Join(h.dir, "hostd.json")
	if err := os.WriteFile(hostdConfig, cb, 0o644); err != nil {
		return nil, err
	}
	d.say("")
	d.say("devid-hostd's configuration:")
	d.show(hostdConfig)
	stop, err := d.start(ctx, filepath.Join(h.dir, "hostd.log"), "devid-hostd", "run", "--config", hostdConfig)
	if err != nil {
		return nil, err
	}
	d.cleanups = append(d.cleanups, stop)
	// Ready for logins once devid-hostd says it installed the host
	// certificate and reloaded sshd, sshd has taken that reload, and the
	// user CA keys and the CA's KRL are in place.
	stateDir := filepath.Join(h.dir, "run")
	var st *hostd.StatusData
	if err := waitFile(ctx, 3*time.Minute, func() bool {
		st, _ = hostd.ReadStatus(stateDir)
		_, err := os.Stat(userCA)
		return st != nil && st.HostCert != nil && st.SSHDReloads > 0 && err == nil && krlVersion(h.krlFile) > 0
	}); err != nil {
		return nil, fmt.Errorf("devid-hostd did not put the host certificate, user CA keys and KRL in place: %w (log: %s)", err, filepath.Join(h.dir, "hostd.log"))
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.sshd.WaitReloaded(wctx, int(st.SSHDReloads)); err != nil {
		return nil, err
	}
	if _, err := d.run("devid-hostd", "status", "--config", hostdConfig); err != nil {
		return nil, err
	}
	d.say("")
	d.say("The host key's files: the TPM key file, and its public half for sshd; no private key.")
	if err := d.runTool("ls", "-l", filepath.Dir(tpmHostKey), managed); err != nil {
		return nil, err
	}
	return h, nil
}

// ssh logs in to the demo host as root with the agent's key and
// certificate, trusting the host through the agent's known_hosts and KRL.
// A refusal expected must say want.
func (d *demo) ssh(ctx context.Context, h *host, a *agent, expectFail bool, want string) error {
	c := sshdrun.Client{Agent: a.socket, KnownHosts: filepath.Join(a.stateDir, "known_hosts"),
		Options: []string{"RevokedHostKeys=" + filepath.Join(a.stateDir, "revoked_host_keys.krl")},
		Command: "echo logged in to $(hostname) as $(id -un)"}
	fmt.Fprintf(d.Out, "\n$ ssh %s\n", strings.Join(quoteAll(h.sshd.Args(c)), " "))
	out, err := h.sshd.SSH(ctx, c)
	io.WriteString(d.Out, out)
	switch {
	case expectFail && err == nil:
		return fmt.Errorf("ssh: expected the login to be refused")
	case !expectFail && err != nil:
		return fmt.Errorf("ssh: %v%s", err, h.sshd.Tail(10))
	case expectFail && !strings.Contains(out, want):
		return fmt.Errorf("ssh: refused, but without saying %q", want)
	}
	return nil
}

// sshdSays prints sshd's log lines that contain what.
func (d *demo) sshdSays(h *host, what string) {
	log, _ := os.ReadFile(h.sshd.Log)
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, what) {
			fmt.Fprintf(d.Out, "sshd's log: %s\n", line)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func krlVersion(file string) uint64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	k, err := krl.Parse(b)
	if err != nil {
		return 0
	}
	// An empty KRL devid-hostd writes before it has the CA's has version 0.
	return k.Version
}

// waitFile polls cond (files another process writes) until it holds.
func waitFile(ctx context.Context, limit time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
