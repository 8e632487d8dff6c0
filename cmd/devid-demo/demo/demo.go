// Package demo tells devid's story on one machine: it runs the real
// binaries (devid-ca, devid, devid-hostd beside a real sshd, and
// devid-principals as its AuthorizedPrincipalsCommand) against real
// software TPMs, prints every command
// it runs with its output, and says in plain words what each step shows. It
// cleans up after itself.
package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
)

// Options configure a demo run.
type Options struct {
	Bin  string    // directory holding the devid binaries
	Dir  string    // working directory; a temporary one if empty
	Keep bool      // keep the working directory
	Out  io.Writer // where the story is told
}

// demo is one run's state.
type demo struct {
	Options
	env      []string
	step     int
	cleanups []func()
}

// Run tells the story. It returns the first failure.
func Run(ctx context.Context, o Options) (err error) {
	d := &demo{Options: o}
	// Child processes' stdout and stderr are copied by two goroutines.
	d.Out = &lockedWriter{w: o.Out}
	if d.Dir == "" {
		if d.Dir, err = os.MkdirTemp("", "devid-demo-"); err != nil {
			return err
		}
	}
	if d.Bin, err = filepath.Abs(d.Bin); err != nil {
		return err
	}
	defer func() {
		for i := len(d.cleanups) - 1; i >= 0; i-- {
			d.cleanups[i]()
		}
		if d.Keep {
			d.say("The demo's files are in %s.", d.Dir)
			return
		}
		os.RemoveAll(d.Dir)
	}()
	d.env = append(os.Environ(), "DEVID_CONFIG="+filepath.Join(d.Dir, "devid", "config.json"))
	return d.story(ctx)
}

func (d *demo) story(ctx context.Context) error {
	p, err := sshdrun.FreePort()
	if err != nil {
		return err
	}
	port := strconv.Itoa(p)
	caURL := "https://localhost:" + port
	caDir := filepath.Join(d.Dir, "ca")

	d.title("Create a CA")
	d.say("devid-ca init makes an X.509 root and intermediate, SSH host and user CA keys,")
	d.say("an admin CA with a first admin certificate, and a config file. It prints the")
	d.say("root fingerprint that clients pin.")
	if _, err := d.run("devid-ca", "init", "--dir", caDir, "--dns", "localhost,127.0.0.1", "--address", "127.0.0.1:"+port); err != nil {
		return err
	}

	d.title("Serve it")
	d.say("devid-ca serve runs step-ca's authority as a library, plus devid's inventory")
	d.say("and admin API, on one HTTPS port. Its log is in %s.", filepath.Join(d.Dir, "ca.log"))
	stop, err := d.start(ctx, filepath.Join(d.Dir, "ca.log"), "devid-ca", "serve", "--config", filepath.Join(caDir, "devid-ca.json"))
	if err != nil {
		return err
	}
	defer stop()
	if err := waitHealthy(ctx, caURL, 3*time.Minute); err != nil {
		return err
	}
	d.say("The CA answers step-ca's /health: it is up.")

	d.title("Pin the CA as an operator")
	d.say("devid bootstrap fetches the root by its fingerprint and keeps it; from now on")
	d.say("the CLI trusts only that root, and presents the admin certificate.")
	fp, err := rootFingerprint(filepath.Join(caDir, "certs", "root_ca.crt"))
	if err != nil {
		return err
	}
	if _, err := d.run("devid", "bootstrap", "--ca-url", caURL, "--fingerprint", fp,
		"--admin-cert", filepath.Join(caDir, "admin", "admin.crt"), "--admin-key", filepath.Join(caDir, "admin", "admin.key")); err != nil {
		return err
	}

	d.title("Add the people who own machines")
	users := filepath.Join(d.Dir, "users.csv")
	if err := os.WriteFile(users, []byte("email,login,groups\nalice@example.com,alice,sre\nbob@example.com,bob,\n"), 0o644); err != nil {
		return err
	}
	d.say("An export from the IdP, imported all or nothing:")
	d.show(users)
	if _, err := d.run("devid", "user", "import", users); err != nil {
		return err
	}

	d.title("Onboard machines from the MDM")
	d.say("The MDM knows Alice's laptop by its serial number, not by its TPM: its export is")
	d.say("imported as it is, and the laptop is pending until its TPM is bound. A host is")
	d.say("added by hand, by serial too; a host may be named only what the inventory says.")
	d.say("Each gets a one-time enrolment token, stored only as its hash, for exactly that")
	d.say("device. Three software TPMs (swtpm) are manufactured with EK certificates, as a")
	d.say("vendor would: the laptop's, the host's, and a machine a thief uses later.")
	jamf := filepath.Join(d.Dir, "jamf-export.csv")
	if err := os.WriteFile(jamf, []byte("Computer Name,Serial Number,Username,Email Address,Operating System,Operating System Version,Jamf Pro Computer ID\n"+
		"laptop-alice,C02ALICE0001,alice,Alice@Example.com,macOS,15.1,17\n"), 0o644); err != nil {
		return err
	}
	d.show(jamf)
	if _, err := d.run("devid", "device", "import", "--format", "jamf", "--collection", "sre-laptops", jamf); err != nil {
		return err
	}
	if _, err := d.run("devid", "device", "add", "--serial", "VMW-4242", "--name", "web-1", "--kind", "host", "--collection", "web",
		"--host-names", "web-1.example.com,127.0.0.1"); err != nil {
		return err
	}
	laptopToken, webToken := filepath.Join(d.Dir, "laptop.token"), filepath.Join(d.Dir, "web-1.token")
	if _, err := d.run("devid", "device", "token", "laptop-alice", "--out", laptopToken); err != nil {
		return err
	}
	if _, err := d.run("devid", "device", "token", "web-1", "--ttl", "2h", "--out", webToken); err != nil {
		return err
	}
	if _, err := d.run("devid", "device", "list"); err != nil {
		return err
	}
	tpms, err := d.manufactureTPMs(ctx, 3)
	if err != nil {
		return err
	}
	laptop, web, thief := tpms[0], tpms[1], tpms[2]

	d.title("The CA signs only keys that live in the TPM")
	d.say("The laptop's first attestation presents its token: once credential activation has")
	d.say("proved the TPM holds its EK, the CA binds that EK to the laptop, which is active")
	d.say("from then on. But it asks for a certificate for an SSH key made with ssh-keygen:")
	d.say("a file, which copied logs in from anywhere. The CA refuses it. It signs only the")
	d.say("key its device certificate is for: a key the TPM made, which the TPM's")
	d.say("attestation key certified over the CA's fresh challenge (ACME device-attest-01).")
	fileKey := filepath.Join(d.Dir, "id_ecdsa")
	if err := sshdrun.Keygen(fileKey); err != nil {
		return err
	}
	if _, err := d.runExpectFail("devid", "enroll", "--tpm", laptop.Addr, "--token-file", laptopToken, "--type", "user", "--key", fileKey+".pub"); err != nil {
		return err
	}
	d.say("")
	d.say("Nor may a host have a name the inventory does not give it (its token binds its")
	d.say("TPM all the same):")
	hostKeyFile := filepath.Join(d.Dir, "host", "ssh_host_key.tpm")
	if err := os.MkdirAll(filepath.Dir(hostKeyFile), 0o755); err != nil {
		return err
	}
	if _, err := d.runExpectFail("devid", "enroll", "--tpm", web.Addr, "--token-file", webToken, "--tpm-key", hostKeyFile, "--principals", "bank.example.com"); err != nil {
		return err
	}

	d.title("A bad import changes nothing")
	bad := filepath.Join(d.Dir, "mdm-export.csv")
	if err := os.WriteFile(bad, []byte("ek,name,kind\nAAAA,laptop-x,workstation\n"), 0o644); err != nil {
		return err
	}
	d.say("An MDM export with a broken EK in it: the import is refused with the line, and")
	d.say("nothing is written.")
	d.show(bad)
	if _, err := d.runExpectFail("devid", "device", "import", bad); err != nil {
		return err
	}

	d.title("Alice's laptop: devid-agent makes her key in the TPM")
	d.say("devid-agent runs as Alice, like ssh-agent. It makes an ECDSA key in the TPM, keeps")
	d.say("on disk only the TPM-wrapped key file, attests the TPM and gets a user certificate")
	d.say("for that key. Its principals come from the inventory: the device ID, Alice's")
	d.say("identity and groups, the collection, and key:tpm, which only TPM keys get.")
	a, err := d.startAgent(ctx, "laptop", caURL, caDir, laptop.Addr, laptopToken)
	if err != nil {
		return err
	}
	if _, err := d.run("devid-agent", "status", "--config", a.config); err != nil {
		return err
	}
	d.say("")
	d.say("The CA knows what the laptop holds, and when it last attested:")
	if _, err := d.run("devid", "device", "show", "laptop-alice"); err != nil {
		return err
	}
	d.say("")
	d.say("Everything it keeps on disk. The key file is the key encrypted by this TPM's")
	d.say("storage key; there is no private key anywhere else:")
	if err := d.runTool("ls", "-l", a.stateDir); err != nil {
		return err
	}
	if err := d.runTool("head", "-n", "2", filepath.Join(a.stateDir, "id_devid.tpm")); err != nil {
		return err
	}
	d.say("")
	d.say("ssh, git and every other client get the key from the agent's socket; every")
	d.say("signature is made in the TPM:")
	if err := d.runToolEnv([]string{"SSH_AUTH_SOCK=" + a.socket}, "ssh-add", "-L"); err != nil {
		return err
	}

	var h *host
	if ok, why := canRunSSHD(); ok {
		d.title("A host: its key in its TPM, sshd kept right by devid-hostd")
		d.say("devid-hostd makes web-1's host key in its TPM and serves it to sshd through")
		d.say("HostKeyAgent: sshd has only the public half. It attests the TPM, installs the host")
		d.say("certificate for that key, the user CA keys and the CA's KRL where sshd reads them,")
		d.say("checks sshd's configuration and reloads it. devid-principals decides, at each")
		d.say("login, which account a device may use.")
		if h, err = d.startHost(ctx, caDir, caURL, web.Addr, hostKeyFile, webToken); err != nil {
			return err
		}
		d.title("Alice logs in from her laptop")
		d.say("ssh takes her key from devid-agent, trusts the host through devid-agent's")
		d.say("known_hosts (@cert-authority) and checks it against the CA's KRL")
		d.say("(RevokedHostKeys); sshd trusts the certificate through the user CA, and")
		d.say("devid-principals finds group:sre and key:tpm in it, as the policy asks for root.")
		if err := d.ssh(ctx, h, a, false, ""); err != nil {
			return err
		}
	} else {
		d.say("")
		d.say("(Skipping the sshd part: %s.)", why)
	}

	d.title("A copy of the laptop's disk is useless elsewhere")
	d.say("A thief copies everything devid-agent keeps, key file and certificate included,")
	d.say("to another machine and starts devid-agent there. The key file can be loaded only")
	d.say("by the TPM that made it:")
	stolen := filepath.Join(d.Dir, "thief", "state")
	if err := copyDir(a.stateDir, stolen); err != nil {
		return err
	}
	thiefCfg, err := d.agentConfig("thief", caURL, caDir, thief.Addr, stolen, "")
	if err != nil {
		return err
	}
	if _, err := d.runExpectFail("devid-agent", "run", "--config", thiefCfg); err != nil {
		return err
	}
	d.say("")
	d.say("Nor does the laptop's enrolment token help: it was used, by the laptop's TPM.")
	if _, err := d.runExpectFail("devid", "enroll", "--tpm", thief.Addr, "--token-file", laptopToken, "--type", "user",
		"--tpm-key", filepath.Join(d.Dir, "thief", "id.tpm")); err != nil {
		return err
	}

	d.title("Quarantine a machine")
	d.say("Alice's laptop is lost. Quarantine takes effect on the very next request: no")
	d.say("certificate will be issued to it until it is activated again, and the CA puts its")
	d.say("device ID in the KRL, which every devid-hostd is waiting for.")
	before := uint64(0)
	if h != nil {
		before = krlVersion(h.krlFile)
	}
	if _, err := d.run("devid", "device", "quarantine", "laptop-alice", "--reason", "lost on a train"); err != nil {
		return err
	}
	if h != nil {
		start := time.Now()
		if err := waitFile(ctx, 3*time.Minute, func() bool { return krlVersion(h.krlFile) > before }); err != nil {
			return fmt.Errorf("the new KRL did not reach the host: %w", err)
		}
		d.say("The host has KRL version %d %s after the quarantine.", krlVersion(h.krlFile), time.Since(start).Round(time.Millisecond))
		d.title("The next login is refused")
		if err := d.ssh(ctx, h, a, true, ""); err != nil {
			return err
		}
		d.sshdSays(h, "revoked")
	}
	if _, err := d.run("devid", "device", "list", "--status", "quarantined"); err != nil {
		return err
	}
	d.say("")
	d.say("The laptop's TPM still works, but the CA refuses it at the first step: asked to")
	d.say("renew now (SIGUSR1), devid-agent says so.")
	if err := a.renewNow(ctx); err != nil {
		return err
	}
	if _, err := d.run("devid-agent", "status", "--config", a.config); err != nil {
		return err
	}

	if h != nil {
		d.title("Clients hear when a host is retired")
		d.say("web-1 is retired. Its device ID goes into the KRL, devid-agent has it within")
		d.say("seconds, and ssh refuses the host before any login is tried.")
		before := a.krlVersion()
		if _, err := d.run("devid", "device", "retire", "web-1", "--reason", "decommissioned"); err != nil {
			return err
		}
		start := time.Now()
		if err := waitFile(ctx, 3*time.Minute, func() bool { return a.krlVersion() > before }); err != nil {
			return fmt.Errorf("the new KRL did not reach devid-agent: %w", err)
		}
		d.say("devid-agent has KRL version %d %s after the retirement.", a.krlVersion(), time.Since(start).Round(time.Millisecond))
		if err := d.ssh(ctx, h, a, true, "revoked"); err != nil {
			return err
		}
	}

	d.title("Who did what")
	d.say("Every change is in the audit trail, with the admin's name from the certificate.")
	if _, err := d.run("devid", "audit"); err != nil {
		return err
	}

	d.title("Done")
	d.say("Stopping the CA and the software TPMs, and removing the demo's files.")
	return nil
}

func (d *demo) title(s string) {
	d.step++
	fmt.Fprintf(d.Out, "\n== %d. %s\n\n", d.step, s)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.Out, format+"\n", args...)
}

// show prints a file the demo wrote.
func (d *demo) show(name string) {
	b, err := os.ReadFile(name)
	if err != nil {
		return
	}
	fmt.Fprintf(d.Out, "--- %s\n%s", filepath.Base(name), b)
}

func (d *demo) command(name string, args ...string) *exec.Cmd {
	fmt.Fprintf(d.Out, "\n$ %s %s\n", name, strings.Join(quoteAll(args), " "))
	cmd := exec.Command(filepath.Join(d.Bin, name), args...)
	cmd.Env = d.env
	cmd.Dir = d.Dir
	return cmd
}

// run runs a devid binary, prints its output, and fails if it fails.
func (d *demo) run(name string, args ...string) (string, error) {
	cmd := d.command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(d.Out, &buf)
	cmd.Stderr = d.Out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return buf.String(), nil
}

// runExpectFail runs a command that must fail.
func (d *demo) runExpectFail(name string, args ...string) (string, error) {
	cmd := d.command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout = d.Out
	cmd.Stderr = io.MultiWriter(d.Out, &buf)
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return "", fmt.Errorf("%s %s: expected it to fail, got %v", name, strings.Join(args, " "), err)
	}
	fmt.Fprintf(d.Out, "(exit status %d)\n", ee.ExitCode())
	return buf.String(), nil
}

// start runs a long-lived binary with its output in logFile; stop ends it.
func (d *demo) start(ctx context.Context, logFile, name string, args ...string) (stop func(), err error) {
	stop, _, err = d.startPID(ctx, logFile, name, args...)
	return stop, err
}

// startPID is start, which also returns the process's ID.
func (d *demo) startPID(ctx context.Context, logFile, name string, args ...string) (stop func(), pid int, err error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, 0, err
	}
	cmd := d.command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, 0, err
	}
	fmt.Fprintf(d.Out, "(running in the background, pid %d)\n", cmd.Process.Pid)
	return func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
	}, cmd.Process.Pid, nil
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// waitHealthy waits until the CA answers /health. Only liveness is checked
// here; trust comes from the pinned fingerprint afterwards.
func waitHealthy(ctx context.Context, caURL string, limit time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", caURL+"/health", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the CA at %s did not come up within %s (last error: %v)", caURL, limit, err)
		case <-tick.C:
		}
	}
}

// runTool runs a system tool (ssh-keygen) and prints its output.
func (d *demo) runTool(name string, args ...string) error {
	return d.runToolEnv(nil, name, args...)
}

// runToolEnv is runTool with more environment variables, which it shows.
func (d *demo) runToolEnv(env []string, name string, args ...string) error {
	fmt.Fprintf(d.Out, "\n$ %s\n", strings.Join(append(quoteAll(env), append([]string{name}, quoteAll(args)...)...), " "))
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = d.Out, d.Out
	return cmd.Run()
}

// lockedWriter serialises writes to an io.Writer shared by goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
