package hostd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/sdnotify"
	"github.com/devid-ssh/devid/internal/statusfile"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/devid-ssh/devid/renew"
	"github.com/devid-ssh/devid/tpm"
	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// LoadRoots reads the CA's root certificate(s) (PEM), the only ones
// trusted.
func LoadRoots(file string) (*x509.CertPool, error) {
	roots, err := pemutil.ReadCertificateBundle(file)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return pool, nil
}

func newPinnedClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
}

// notify sends a systemd notification (package sdnotify keeps
// NOTIFY_SOCKET for the later RELOADING and STOPPING messages).
func notify(log *slog.Logger, state string) { sdnotify.Notify(log, state) }

// Daemon runs devid-hostd's tasks from a configuration file, and runs them
// again with the new configuration on SIGHUP or when the file changes.
type Daemon struct {
	ConfigFile string
	Log        *slog.Logger
	// Registry takes the tasks' metrics; default NewRegistry(). It is kept
	// across configurations, so counters go on counting.
	Registry *prometheus.Registry
	// MetricsReady, if set, is told the metrics listener's address.
	MetricsReady func(net.Addr)
	// NewIssuer and NewSSHD, if set, replace the host certificate's issuer
	// (an EnrollIssuer with the configured TPM) and the configured sshd:
	// tests run the daemon on fakes with them.
	NewIssuer func(cfg *Config, roots *x509.CertPool, log *slog.Logger) Issuer
	NewSSHD   func(cfg *Config) SSHD
	// HostKeyListener, if set, is the HostKeyAgent socket systemd passed
	// (devid-hostd.socket); else the daemon makes cfg.HostKeyAgent.
	HostKeyListener net.Listener

	agentMu       sync.Mutex
	agentListener net.Listener // the HostKeyAgent socket the daemon made
	agentPath     string
	hostKeySrv    *hostKeyServer  // the TPM host key, served
	runCtx        context.Context // Run's: ends when the daemon stops

	reloads atomic.Uint64 // sshd reloads asked for, across configurations
}

// Run runs until ctx is done (SIGTERM/SIGINT in devid-hostd).
func (d *Daemon) Run(ctx context.Context) error {
	if d.Registry == nil {
		d.Registry = NewRegistry()
	}
	cfg, err := LoadConfig(d.ConfigFile)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// SIGUSR1 (`devid-hostd renew`): renew the host certificate now.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	// The lock tells `devid-hostd renew` and `status` this process's ID:
	// only once its signals are handled (SIGUSR1 would otherwise kill it).
	lock, err := LockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer func() { lock.Release() }()
	renewNow := make(chan struct{}, 1)
	ctx, stopSignals := context.WithCancel(ctx) // ends the goroutine below with Run
	defer stopSignals()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				d.Log.Info("renewal of the host certificate requested (SIGUSR1)")
				select {
				case renewNow <- struct{}{}:
				default:
				}
			}
		}
	}()
	stopWatchdog := d.watchdog(ctx)
	defer stopWatchdog()
	d.runCtx = ctx
	defer d.closeHostKeyListener()
	defer d.stopHostKeyServer()
	for {
		reload := make(chan struct{}, 1)
		changed := func() {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- d.runOnce(rctx, cfg, changed, renewNow) }()
	wait:
		for {
			var why string
			select {
			case <-ctx.Done():
				notify(d.Log, sdnotify.Stopping+"\nSTATUS=stopping")
				cancel()
				return <-errc
			case err := <-errc:
				cancel()
				return err
			case <-hup:
				why = "SIGHUP"
			case <-reload:
				why = "config file changed"
			}
			next, err := LoadConfig(d.ConfigFile)
			if err != nil {
				// Keep running as we are: a broken file must not take the
				// host's certificate management down.
				d.Log.Error("configuration not reloaded: keeping the running one", "reason", why, "err", err)
				notify(d.Log, "STATUS=configuration not reloaded: "+err.Error())
				continue
			}
			// A new stateDir is claimed before the running configuration
			// stops: hostd.pid is never unclaimed while the daemon runs, and
			// one that cannot be claimed keeps the running configuration.
			// The same directory under another name keeps its claim (a
			// process's second lock on a file is no claim at all, and
			// releasing the first would drop both).
			var newLock *StateLock
			if !SameDir(next.StateDir, cfg.StateDir) {
				if newLock, err = LockStateDir(next.StateDir); err != nil {
					d.Log.Error("configuration not reloaded: keeping the running one", "reason", why, "err", err)
					notify(d.Log, "STATUS=configuration not reloaded: "+err.Error())
					continue
				}
			}
			notify(d.Log, sdnotify.Reloading)
			d.Log.Info("reloading configuration", "reason", why, "file", d.ConfigFile)
			cancel()
			if err := <-errc; err != nil {
				newLock.Release()
				return err
			}
			if newLock != nil {
				lock.Release()
				lock = newLock
			}
			cfg = next
			break wait
		}
	}
}

// runOnce runs every task for one configuration until ctx is done or a
// task fails for good.
func (d *Daemon) runOnce(ctx context.Context, cfg *Config, configChanged func(), renewNow <-chan struct{}) error {
	pool, err := LoadRoots(cfg.Root)
	if err != nil {
		return err
	}
	tpmAddr, err := ParseTPMAddress(cfg.TPM) // as check did
	if err != nil {
		return fmt.Errorf("tpm %q: %w", cfg.TPM, err)
	}
	var hostKey ssh.PublicKey
	var hk *hostKeyServer
	if cfg.TPMHostKeyMode() {
		// The TPM stays open, the key loaded and served, across
		// configurations that keep them: sshd holds its agent connection
		// for a whole SSH session.
		if hk, err = d.hostKeyServer(d.runCtx, cfg, tpmAddr); err != nil {
			return err
		}
		hostKey = hk.pub
		if err := installHostKeyPublic(cfg.SSHDHostKey, hostKey); err != nil {
			return err
		}
	} else {
		d.stopHostKeyServer()
		if hostKey, err = HostPublicKey(cfg); err != nil {
			return err
		}
	}
	managed := []string{cfg.HostCertificate, cfg.TrustedUserCAKeys}
	if cfg.RevokedKeys != "off" {
		managed = append(managed, cfg.RevokedKeys)
	}
	for _, dir := range uniqueDirs(managed...) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	d.removeStale(cfg, managed)
	st := statusfile.New[*StatusData](filepath.Join(cfg.StateDir, "status.json"), d.Log)
	scoped := func(task string) *slog.Logger { return d.Log.With("task", task) }
	opts := func(task string) TaskOptions {
		return TaskOptions{Registerer: d.registry(), Log: scoped(task), Changed: st.Kick}
	}
	files := NewFiles()
	// The last good user CA keys, from the installed file until the CA
	// sends some: the RevokedKeys task verifies with them.
	caKeys := &CAKeys{}
	nCAKeys, caKeysErr := caKeys.Load(cfg.TrustedUserCAKeys)
	if caKeysErr != nil && !errors.Is(caKeysErr, os.ErrNotExist) {
		d.Log.Warn("cannot read the installed user CA keys; KRLs are verified with the CA's until it sends some", "err", caKeysErr)
	}
	var issuer Issuer = &EnrollIssuer{
		Client:  cfg.Enrolment.Apply(enroll.New(cfg.CAURL, pool, scoped(TaskHostCert)), "host"),
		Key:     hk.residentKey(),
		TPM:     hk.tpm(),
		OpenTPM: func() (*tpm.TPM, error) { return tpmAddr.Open(&tpm.Config{Logger: scoped(TaskHostCert)}) },
	}
	if d.NewIssuer != nil {
		issuer = d.NewIssuer(cfg, pool, scoped(TaskHostCert))
	}
	sshd := NewSSHD(cfg)
	if d.NewSSHD != nil {
		sshd = d.NewSSHD(cfg)
	}
	hc := NewHostCertificate(HostCertificateConfig{
		File: cfg.HostCertificate, Key: hostKey, Principals: cfg.Principals, Issuer: issuer,
		SSHD: sshd, Files: files, Policy: renew.Policy{Fraction: cfg.RenewFraction},
		RenewNow: renewNow, Reloads: &d.reloads,
		TaskOptions: opts(TaskHostCert),
	})
	userCA := NewTrustedUserCAKeys(TrustedUserCAKeysConfig{
		CAURL: cfg.CAURL, HTTP: newPinnedClient(pool), File: cfg.TrustedUserCAKeys, Interval: cfg.UserCAInterval.Duration,
		Files: files, CAKeys: caKeys,
		TaskOptions: opts(TaskUserCA),
	})
	if caKeysErr == nil {
		userCA.Installed(nCAKeys)
	}
	watch := NewWatch(WatchConfig{
		Files: files, Dirs: uniqueDirs(managed...), ConfigFile: cfg.File(), ConfigChanged: configChanged,
		TaskOptions: opts(TaskWatch),
	})
	tasks := []task.Task{hc, userCA, watch}
	if hk != nil {
		tasks = append(tasks, hk.watchTask())
	}
	var revoked *RevokedKeys
	if cfg.RevokedKeys == "off" {
		// Not even as "never": a KRL turned off is not a stale one.
		forgetTask(d.registry(), TaskKRL)
	} else {
		// No client timeout: the KRL request long-polls (its wait bounds it).
		hc := newPinnedClient(pool)
		hc.Timeout = 0
		revoked = NewRevokedKeys(RevokedKeysConfig{
			CAURL: cfg.CAURL, HTTP: hc, File: cfg.RevokedKeys, Files: files, CAKeys: caKeys,
			TaskOptions: opts(TaskKRL),
		})
		// The file must be there before anything else runs.
		if err := revoked.Prepare(); err != nil {
			return err
		}
		tasks = append(tasks, revoked)
	}
	if cfg.MetricsAddress != "off" {
		tasks = append(tasks, &MetricsServer{Addr: cfg.MetricsAddress, Gatherer: d.registry(), Log: scoped("metrics"), Ready: d.MetricsReady})
	}
	// The status file is written from the tasks' snapshots, after every
	// change; READY once sshd has what a login needs: a host certificate
	// and the user CA keys (either found valid on disk at start counts).
	var readyOnce sync.Once
	st.Snapshot = func() *StatusData {
		s := &StatusData{Updated: wallClock(), PID: os.Getpid(), Tasks: map[string]TaskStatus{}, Restored: map[string]int{}}
		// A task is listed once it has succeeded or failed.
		list := func(name string, ts TaskStatus) {
			if ts != (TaskStatus{}) {
				s.Tasks[name] = ts
			}
		}
		h := hc.Status()
		s.HostCert, s.SSHDReloads = h.Cert, h.SSHDReloads
		list(TaskHostCert, h.Task)
		u := userCA.Status()
		s.UserCA = u.Keys
		list(TaskUserCA, u.Task)
		w := watch.Status()
		s.Restored = w.Restored
		list(TaskWatch, w.Task)
		if revoked != nil {
			k := revoked.Status()
			s.KRLVersion, s.KRLGenerated = k.Version, k.Generated
			list(TaskKRL, k.Task)
		}
		return s
	}
	st.Written = func(s *StatusData) {
		if s.HostCert != nil && s.UserCA > 0 {
			readyOnce.Do(func() {
				notify(d.Log, sdnotify.Ready+"\nSTATUS=host certificate and user CA keys in place; keeping them current")
			})
		}
	}
	notify(d.Log, "STATUS=getting a host certificate")
	// A task that fails is restarted with a back-off (a panic too); one
	// that cannot go on (the metrics listener) stops the daemon.
	return (&task.Runner{Log: d.Log}).Run(ctx, append(tasks, st)...)
}

func (d *Daemon) registry() *prometheus.Registry { return d.Registry }

// watchdog pings systemd at half of WATCHDOG_USEC, if set.
func (d *Daemon) watchdog(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sdnotify.Watchdog(ctx, d.Log, nil)
	}()
	return func() { cancel(); <-done }
}

// removeStale removes the temporary files interrupted writes left in the
// directories devid-hostd writes. Nothing else writes there while it runs
// (its StateDir lock keeps a second devid-hostd out), and the tasks of a
// previous configuration have stopped.
func (d *Daemon) removeStale(cfg *Config, managed []string) {
	names := []string{"status.json"}
	for _, p := range managed {
		names = append(names, filepath.Base(p))
	}
	for _, dir := range uniqueDirs(append(managed, filepath.Join(cfg.StateDir, "status.json"))...) {
		removed, err := atomicfile.RemoveStale(dir, names...)
		if err != nil {
			d.Log.Warn("cannot remove stale temporary files", "dir", dir, "err", err)
		}
		for _, p := range removed {
			d.Log.Info("removed a temporary file an interrupted write left", "file", p)
		}
	}
}

func uniqueDirs(paths ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		d := filepath.Dir(p)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
