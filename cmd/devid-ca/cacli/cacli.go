// Package cacli is the devid-ca command: create a CA, serve it, issue
// admin certificates, and make SCIM clients' bearer tokens.
package cacli

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/internal/sdnotify"
	"go.step.sm/crypto/pemutil"
)

// Main runs devid-ca with args (without the program name) and returns its
// exit code.
func Main(args []string, env *command.Env) int {
	return command.Run(root(), env, args)
}

func root() *command.Command {
	return &command.Command{
		Name:    "devid-ca",
		Summary: "devid-ca is devid's CA: device inventory and SSH certificates, built on step-ca.",
		Sub:     []*command.Command{initCmd(), serveCmd(), {Name: "admin", Summary: "admin certificates", Sub: []*command.Command{adminIssueCmd()}}, scimTokenCmd(), restoreCmd(), migrateCmd()},
	}
}

func initCmd() *command.Command {
	var o caserver.InitOptions
	var dns string
	return &command.Command{
		Name: "init", Summary: "create a new CA: root, intermediate, SSH CA keys, admin CA and certificate, config file",
		Usage: "--dir DIR [--dns NAMES] [--address HOST:PORT] [--metrics-address HOST:PORT] [--name NAME] [--admin NAME]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.Dir, "dir", "", "directory for the CA (required; must not hold a CA)")
			fs.StringVar(&dns, "dns", "", "comma-separated DNS names (RFC 1123) and IP addresses clients use to reach the CA (default: this host's name, localhost, 127.0.0.1)")
			fs.StringVar(&o.Address, "address", ":8443", "address to listen on, HOST:PORT or :PORT (port 1-65535)")
			fs.StringVar(&o.MetricsAddress, "metrics-address", "", "address of the Prometheus metrics listener (plain HTTP, /metrics), e.g. 127.0.0.1:9751 (default: none)")
			fs.StringVar(&o.Name, "name", "devid", "CA name, in certificate subjects")
			fs.StringVar(&o.AdminName, "admin", "admin", "name of the first admin")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if o.Dir == "" {
				return command.Usagef("--dir is required")
			}
			if dns != "" {
				for _, n := range strings.Split(dns, ",") {
					o.DNSNames = append(o.DNSNames, strings.TrimSpace(n))
				}
			} else {
				if h, err := os.Hostname(); err == nil {
					o.DNSNames = append(o.DNSNames, h)
				}
				o.DNSNames = append(o.DNSNames, "localhost", "127.0.0.1")
			}
			o.Now = time.Now()
			res, err := caserver.Init(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, `Created a devid CA in %s.

  Config:            %s
  Root fingerprint:  %s
  Admin certificate: %s
  Admin key:         %s

Keep %s offline: serving does not need it.
Start the CA:   devid-ca serve --config %s
Then, as an admin:
  devid bootstrap --ca-url https://%s%s --fingerprint %s \
    --admin-cert %s --admin-key %s
`, o.Dir, res.Config, res.RootFingerprint, res.AdminCert, res.AdminKey,
				filepath.Join(o.Dir, "secrets", "root_ca.key"), res.Config,
				o.DNSNames[0], portSuffix(o.Address), res.RootFingerprint, res.AdminCert, res.AdminKey)
			return nil
		},
	}
}

func portSuffix(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "443" || port == "" {
		return ""
	}
	return ":" + port
}

func serveCmd() *command.Command {
	var cfgFile string
	return &command.Command{
		Name: "serve", Summary: "serve the CA over HTTPS (and metrics, if configured) until SIGINT or SIGTERM", Usage: "--config FILE",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&cfgFile, "config", "", "config file written by devid-ca init (required)")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if cfgFile == "" {
				return command.Usagef("--config is required")
			}
			cfg, err := caserver.LoadConfig(cfgFile)
			if err != nil {
				return err
			}
			log := newLogger(env, cfg.Log)
			return serve(cfg, log)
		},
	}
}

// serve runs the CA as a systemd Type=notify service (outside systemd the
// notifications are no-ops): READY=1 once the store is open and the HTTPS
// and metrics listeners serve; watchdog pings while the store answers
// (WatchdogSec=); STOPPING=1 when SIGTERM or SIGINT starts the shutdown.
func serve(cfg *caserver.Config, log *slog.Logger) error {
	sdnotify.Notify(log, "STATUS=opening the store")
	srv, err := caserver.New(cfg, caserver.Options{Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	o := caserver.ServeOptions{}
	if o.HTTPS, err = net.Listen("tcp", cfg.Address); err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Address, err)
	}
	status := "serving HTTPS on " + o.HTTPS.Addr().String()
	if cfg.MetricsAddress != "" {
		if o.Metrics, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			o.HTTPS.Close()
			return fmt.Errorf("metricsAddress: listen on %s: %w", cfg.MetricsAddress, err)
		}
		status += ", metrics on http://" + o.Metrics.Addr().String() + "/metrics"
	}
	o.Ready = func() { sdnotify.Notify(log, sdnotify.Ready+"\nSTATUS="+status) }
	if sdnotify.WatchdogInterval() > 0 {
		o.Watchdog = sdnotify.Watchdog
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// STOPPING=1 as the shutdown starts; sent before Serve returns, so
	// that it is not lost with the process.
	stopping := make(chan struct{})
	notStarted := context.AfterFunc(ctx, func() {
		defer close(stopping)
		sdnotify.Notify(log, sdnotify.Stopping+"\nSTATUS=stopping")
	})
	err = srv.ServeWith(ctx, o)
	if !notStarted() {
		<-stopping
	}
	log.Info("devid-ca stopped")
	return err
}

func newLogger(env *command.Env, c caserver.LogConfig) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // checked by LoadConfig; "" is info
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(env.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(env.Stderr, opts))
}

func adminIssueCmd() *command.Command {
	var dir, name, out string
	var lifetime time.Duration
	return &command.Command{
		Name: "issue", Summary: "issue an admin client certificate with the admin CA key",
		Usage: "--dir DIR --name NAME [--lifetime 8760h] [--out PREFIX]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "dir", "", "the CA directory (required)")
			fs.StringVar(&name, "name", "", "the admin's name, recorded in the audit trail (required)")
			fs.DurationVar(&lifetime, "lifetime", 365*24*time.Hour, "certificate lifetime")
			fs.StringVar(&out, "out", "", "write PREFIX.crt and PREFIX.key (default DIR/admin/NAME)")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if dir == "" || name == "" {
				return command.Usagef("--dir and --name are required")
			}
			if lifetime <= 0 {
				return command.Usagef("--lifetime must be positive")
			}
			adminCA, err := pemutil.ReadCertificate(filepath.Join(dir, "certs", "admin_ca.crt"))
			if err != nil {
				return err
			}
			k, err := pemutil.Read(filepath.Join(dir, "secrets", "admin_ca.key"))
			if err != nil {
				return err
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return errors.New("admin CA key is not a signing key")
			}
			certPEM, keyPEM, err := caserver.IssueAdmin(adminCA, signer, name, lifetime, time.Now())
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(dir, "admin", name)
			}
			for _, f := range []string{out + ".crt", out + ".key"} {
				if _, err := os.Stat(f); err == nil {
					return fmt.Errorf("%s exists: not overwriting", f)
				}
			}
			if err := atomicfile.WriteFile(out+".key", keyPEM, 0o600); err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out+".crt", certPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "admin %s: %s.crt and %s.key, valid for %s\n", name, out, out, lifetime)
			return nil
		},
	}
}
