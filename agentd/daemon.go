// Package agentd is devid-agent, the workstation side of devid: a daemon
// that runs as the user (like ssh-agent) and
//
//   - makes once, in the machine's TPM, an ECDSA P-256 key that never
//     leaves it, kept on disk only as a TPM-wrapped key file (TSS2 PRIVATE
//     KEY, as ssh-tpm-agent writes it): a copy is useless on any other
//     machine;
//   - attests the TPM to devid-ca and gets a user certificate for that key
//     (the device certificate is for the same key, which is how the CA
//     knows it lives in the TPM), renews it at 2/3 of its lifetime with
//     jitter and back-off, each time with a fresh attestation, so a
//     quarantined device says so at the next renewal;
//   - serves the key and certificate to ssh, git and every other client
//     through the ssh-agent protocol on a unix socket (systemd socket
//     activation, or its own), every signature made in the TPM;
//   - keeps the client's view of hosts right: a known_hosts file trusting
//     the CA's host CA keys (@cert-authority) and the CA's KRL for ssh's
//     RevokedHostKeys, so a quarantined or retired host is refused within
//     seconds.
//
// The renewal, known_hosts and KRL tasks are devid-hostd's (package
// hostd), configured for a user: the certificate is a user certificate
// and no sshd is reloaded. When a KRL the agent fetches revokes its own
// certificate (the CA revokes by serial the certificates naming a renamed
// user's old email and login), it renews at once, as on SIGUSR1, rather
// than at the scheduled renewal. status.json in the state directory is what
// `devid-agent status` shows.
package agentd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/buildinfo/buildmetrics"
	"github.com/devid-ssh/devid/internal/statusfile"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/devid-ssh/devid/renew"
	"github.com/devid-ssh/devid/sshagent"
	"github.com/devid-ssh/devid/tpm"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// Task names, as logs and status.json name them.
const (
	TaskCert       = "usercert"
	TaskKnownHosts = hostd.TaskKnownHosts
	TaskKRL        = hostd.TaskKRL
	TaskAgent      = "agent"
)

// Daemon is devid-agent.
type Daemon struct {
	Config *Config
	Log    *slog.Logger
	// Listener, if set, is the agent socket (systemd's); else the daemon
	// listens on Config.Socket.
	Listener net.Listener
	// Ready, if set, is called once the socket serves the key (with or
	// without a certificate yet).
	Ready func()
	// RenewNow, if set, asks for a renewal at once (SIGUSR1).
	RenewNow <-chan struct{}
}

// Run runs the daemon until ctx is done. It fails at once, saying why, if
// the TPM cannot be opened or the key cannot be made or loaded.
func (d *Daemon) Run(ctx context.Context) error {
	cfg := d.Config
	paths := cfg.Paths()
	pool, err := hostd.LoadRoots(cfg.Root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("stateDir: %w", err)
	}
	// The socket first: a second agent of the same user is refused before
	// it could make a key of its own.
	l := d.Listener
	if l == nil {
		if l, err = sshagent.Listen(cfg.Socket); err != nil {
			return err
		}
	}
	defer l.Close()
	addr, err := hostd.ParseTPMAddress(cfg.TPM)
	if err != nil {
		return fmt.Errorf("tpm %q: %w", cfg.TPM, err)
	}
	t, err := addr.Open(&tpm.Config{Logger: d.Log})
	if err != nil {
		return err
	}
	defer t.Close()
	key, created, err := t.LoadOrCreateKeyFile(paths.Key, "devid-agent")
	if err != nil {
		return err
	}
	defer key.Close()
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(paths.PublicKey, ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		return err
	}
	if created {
		d.Log.Info("created a new key in the TPM", "key_file", paths.Key, "fingerprint", ssh.FingerprintSHA256(pub))
	} else {
		d.Log.Info("loaded the TPM key", "key_file", paths.Key, "fingerprint", ssh.FingerprintSHA256(pub))
	}

	st := statusfile.New[*Status](filepath.Join(cfg.StateDir, "status.json"), d.Log)
	scoped := func(name string) *slog.Logger { return d.Log.With("task", name) }
	reg := prometheus.NewRegistry() // the tasks' metrics; a user agent exports none
	reg.MustRegister(buildmetrics.Collector("devid-agent"))
	opts := func(name string) hostd.TaskOptions {
		return hostd.TaskOptions{Registerer: reg, Log: scoped(name), Changed: st.Kick}
	}
	files := hostd.NewFiles()
	// A renewal at once: asked for by SIGUSR1 (RenewNow), or when the KRL
	// revokes the certificate in place (revokedWatch).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewNow := make(chan struct{}, 1)
	ask := func() {
		select {
		case renewNow <- struct{}{}:
		default: // one asked for already
		}
	}
	if d.RenewNow != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-d.RenewNow:
					ask()
				}
			}
		}()
	}
	cert := hostd.NewHostCertificate(hostd.HostCertificateConfig{
		File: paths.Cert, CertType: ssh.UserCert, Key: pub,
		Issuer: &hostd.EnrollIssuer{Client: cfg.Enrolment.Apply(enroll.New(cfg.CAURL, pool, scoped(TaskCert)), "workstation"), Type: "user", Key: key, TPM: t},
		Files:  files, Policy: renew.Policy{Fraction: cfg.RenewFraction}, RenewNow: renewNow,
		TaskOptions: opts(TaskCert),
	})
	knownHosts := hostd.NewTrustedUserCAKeys(hostd.TrustedUserCAKeysConfig{
		CAURL: cfg.CAURL, HTTP: hostd.NewHTTPClient(pool), File: paths.KnownHosts, KnownHosts: true,
		Interval: cfg.HostCAInterval.Duration, Files: files, TaskOptions: opts(TaskKnownHosts),
	})
	krlClient := hostd.NewHTTPClient(pool)
	krlClient.Timeout = 0 // the KRL request long-polls; its wait bounds it
	revoked := &revokedWatch{file: paths.Cert, key: pub, now: time.Now, log: scoped(TaskKRL), ask: ask}
	krl := hostd.NewRevokedKeys(hostd.RevokedKeysConfig{
		CAURL: cfg.CAURL, HTTP: krlClient, File: paths.KRL, Files: files, Installed: revoked.installed, TaskOptions: opts(TaskKRL),
	})
	// ssh refuses every host while RevokedHostKeys names a missing file.
	if err := krl.Prepare(); err != nil {
		return err
	}
	src := &identities{signer: key, pub: pub, file: paths.Cert, now: time.Now}
	ag := sshagent.New(src, sshagent.Options{Logger: scoped(TaskAgent)})
	agentTask := task.Func(TaskAgent, func(ctx context.Context) error {
		if d.Ready != nil {
			d.Ready()
		}
		err := ag.Serve(ctx, l)
		if err != nil && ctx.Err() == nil {
			return task.Fatal(fmt.Errorf("agent socket: %w", err))
		}
		return nil
	})
	st.Snapshot = func() *Status {
		s := &Status{Updated: time.Now().Round(0), PID: os.Getpid(), Socket: l.Addr().String(), KeyFile: paths.Key,
			Fingerprint: ssh.FingerprintSHA256(pub), Tasks: map[string]hostd.TaskStatus{}, Signatures: ag.Stats().Signatures}
		list := func(name string, ts hostd.TaskStatus) {
			if ts != (hostd.TaskStatus{}) {
				s.Tasks[name] = ts
			}
		}
		c := cert.Status()
		s.Certificate = c.Cert
		list(TaskCert, c.Task)
		if c.Task.LastFailure.After(c.Task.LastSuccess) {
			s.LastError = c.Task.LastError
		}
		k := knownHosts.Status()
		s.HostCAKeys = k.Keys
		list(TaskKnownHosts, k.Task)
		r := krl.Status()
		s.KRLVersion, s.KRLGenerated = r.Version, r.Generated
		list(TaskKRL, r.Task)
		return s
	}
	d.Log.Info("devid-agent started", "socket", l.Addr().String(), "state_dir", cfg.StateDir)
	runner := &task.Runner{Log: d.Log}
	return runner.Run(ctx, agentTask, cert, knownHosts, krl, st)
}

// identities is what the agent serves: the TPM key, and the certificate on
// disk while it is valid for it.
type identities struct {
	signer *tpm.ResidentKey
	pub    ssh.PublicKey
	file   string
	now    func() time.Time
}

// Identities implements sshagent.Source.
func (s *identities) Identities() []sshagent.Identity {
	id := sshagent.Identity{Signer: s.signer, Comment: "devid TPM key " + s.file}
	if cert := s.certificate(); cert != nil {
		id.Certificate = cert
	}
	return []sshagent.Identity{id}
}

func (s *identities) certificate() *ssh.Certificate {
	now := s.now()
	cert, _ := hostd.ReadCertificate(s.file, ssh.UserCert, s.pub, now)
	if cert == nil || uint64(now.Unix()) < cert.ValidAfter {
		return nil
	}
	return cert
}

// Status is what `devid-agent status` shows, kept in StateDir/status.json.
type Status struct {
	Updated     time.Time         `json:"updated"`
	PID         int               `json:"pid"`
	Socket      string            `json:"socket"`
	KeyFile     string            `json:"keyFile"`
	Fingerprint string            `json:"fingerprint"`
	Certificate *hostd.CertStatus `json:"certificate,omitempty"`
	// LastError is the last renewal's error, while no renewal has
	// succeeded since (a quarantined device says so here).
	LastError    string                      `json:"lastError,omitempty"`
	HostCAKeys   int                         `json:"hostCaKeys"`
	KRLVersion   uint64                      `json:"krlVersion"`
	KRLGenerated time.Time                   `json:"krlGenerated,omitzero"`
	Signatures   uint64                      `json:"signatures"`
	Tasks        map[string]hostd.TaskStatus `json:"tasks"`
}

// ReadStatus reads the status file in dir.
func ReadStatus(dir string) (*Status, error) {
	file := filepath.Join(dir, "status.json")
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no status in %s: is devid-agent running (systemctl --user status devid-agent)?", dir)
	}
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &s, nil
}
