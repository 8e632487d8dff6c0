// Package hostdcli is the devid-hostd command: run the daemon, show its
// status, check a configuration.
package hostdcli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/cliutil"
)

// Main runs devid-hostd with args and returns its exit code.
func Main(args []string, env *cliutil.Env) int {
	return cliutil.Run(root(), env, args)
}

func root() *cliutil.Command {
	return &cliutil.Command{
		Name:    "devid-hostd",
		Summary: "devid-hostd keeps this host's SSH host certificate, user CA keys and sshd right.",
		Sub:     []*cliutil.Command{runCmd(), statusCmd(), checkCmd()},
	}
}

func configFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "config", hostd.DefaultConfigFile, "configuration `file`")
}

func runCmd() *cliutil.Command {
	var file, format string
	return &cliutil.Command{
		Name: "run", Summary: "run the daemon until SIGTERM or SIGINT (SIGHUP rereads the configuration)", Usage: "[--config FILE] [--log-format text|json]",
		Flags: func(fs *flag.FlagSet) {
			configFlag(fs, &file)
			fs.StringVar(&format, "log-format", "text", "log format on standard error (journald keeps it): text or json")
		},
		Run: func(env *cliutil.Env, args []string) error {
			if err := cliutil.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			var h slog.Handler = slog.NewTextHandler(env.Stderr, nil)
			if format == "json" {
				h = slog.NewJSONHandler(env.Stderr, nil)
			} else if format != "text" {
				return cliutil.Usagef("--log-format %q: want text or json", format)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			d := &hostd.Daemon{ConfigFile: file, Log: slog.New(h)}
			return d.Run(ctx)
		},
	}
}

func statusCmd() *cliutil.Command {
	return withConfig("status", "show the host certificate, next renewal and each task's last success and error",
		func(env *cliutil.Env, file string, cfg *hostd.Config) error {
			st, err := hostd.ReadStatus(cfg.StateDir)
			if err != nil {
				return err
			}
			st.Print(env.Stdout, time.Now())
			return nil
		})
}

func checkCmd() *cliutil.Command {
	return withConfig("check", "check a configuration file and print it with its defaults",
		func(env *cliutil.Env, file string, cfg *hostd.Config) error {
			fmt.Fprintf(env.Stdout, "%s: OK\n  caUrl %s\n  tpm %s\n  hostKey %s\n  hostCertificate %s\n  principals %v\n  trustedUserCAKeys %s\n  sshd %s -t -f %s\n  reload %+v\n  metricsAddress %s\n  renewFraction %.4f\n",
				file, cfg.CAURL, cfg.TPM, cfg.HostKey, cfg.HostCertificate, cfg.Principals, cfg.TrustedUserCAKeys,
				cfg.SSHD.Binary, cfg.SSHD.Config, cfg.Reload, cfg.MetricsAddress, cfg.RenewFraction)
			return nil
		})
}

// withConfig is a command that takes only --config and works on the loaded
// configuration.
func withConfig(name, summary string, run func(env *cliutil.Env, file string, cfg *hostd.Config) error) *cliutil.Command {
	var file string
	return &cliutil.Command{
		Name: name, Summary: summary, Usage: "[--config FILE]",
		Flags: func(fs *flag.FlagSet) { configFlag(fs, &file) },
		Run: func(env *cliutil.Env, args []string) error {
			if err := cliutil.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			cfg, err := hostd.LoadConfig(file)
			if err != nil {
				return err
			}
			return run(env, file, cfg)
		},
	}
}
