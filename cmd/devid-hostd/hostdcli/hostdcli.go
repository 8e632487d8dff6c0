// Package hostdcli is the devid-hostd command: run the daemon, show its
// status, ask it to renew now, check a configuration.
package hostdcli

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/sshagent"
)

// Main runs devid-hostd with args and returns its exit code.
func Main(args []string, env *command.Env) int {
	return command.Run(root(), env, args)
}

func root() *command.Command {
	return &command.Command{
		Name:    "devid-hostd",
		Summary: "devid-hostd keeps this host's SSH host certificate, user CA keys and sshd right.",
		Sub:     []*command.Command{runCmd(), statusCmd(), renewCmd(), checkCmd()},
	}
}

func configFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "config", hostd.DefaultConfigFile, "configuration `file`")
}

func runCmd() *command.Command {
	var file, format string
	return &command.Command{
		Name: "run", Summary: "run the daemon until SIGTERM or SIGINT (SIGHUP rereads the configuration, SIGUSR1 renews the host certificate now)", Usage: "[--config FILE] [--log-format text|json]",
		Flags: func(fs *flag.FlagSet) {
			configFlag(fs, &file)
			fs.StringVar(&format, "log-format", "text", "log format on standard error (journald keeps it): text or json")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			log, err := command.Logger(env, format)
			if err != nil {
				return err
			}
			// devid-hostd.socket: the HostKeyAgent socket, held by systemd.
			l, err := sshagent.ActivatedListener()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			d := &hostd.Daemon{ConfigFile: file, Log: log, HostKeyListener: l}
			return d.Run(ctx)
		},
	}
}

// ExitNotRunning is the exit code of status and renew when no devid-hostd
// runs with the configuration's stateDir (3, as `systemctl status` and the
// LSB init scripts use for "not running").
const ExitNotRunning = 3

func notRunning(cfg *hostd.Config) error {
	return &command.ExitCodeError{Code: ExitNotRunning,
		Err: fmt.Errorf("devid-hostd is not running (no process holds %s)", filepath.Join(cfg.StateDir, hostd.PIDFileName))}
}

func statusCmd() *command.Command {
	return withConfig("status", "show whether the daemon runs, the host certificate, next renewal and each task's last success and error; exit 0 running, 3 not running, 1 error",
		func(env *command.Env, file string, cfg *hostd.Config) error {
			pid, err := hostd.RunningPID(cfg.StateDir)
			if err != nil {
				return err
			}
			if pid == 0 {
				fmt.Fprintf(env.Stdout, "devid-hostd  NOT RUNNING (stateDir %s)\n", cfg.StateDir)
			}
			st, err := hostd.ReadStatus(cfg.StateDir)
			if err != nil && pid != 0 {
				return err
			}
			if st != nil {
				if pid == 0 {
					fmt.Fprintln(env.Stdout, "last known status:")
				}
				st.Print(env.Stdout, time.Now(), pid, hostd.LastPID(cfg.StateDir))
			}
			if pid == 0 {
				return notRunning(cfg)
			}
			return nil
		})
}

func renewCmd() *command.Command {
	return withConfig("renew", "ask the running daemon to renew the host certificate now (SIGUSR1); exit 0 asked, 3 not running, 1 error",
		func(env *command.Env, file string, cfg *hostd.Config) error {
			pid, err := hostd.RunningPID(cfg.StateDir)
			if err != nil {
				return err
			}
			if pid == 0 {
				return notRunning(cfg)
			}
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				return fmt.Errorf("SIGUSR1 to devid-hostd (pid %d): %w", pid, err)
			}
			fmt.Fprintf(env.Stdout, "asked devid-hostd (pid %d) to renew the host certificate now; `devid-hostd status` shows the result\n", pid)
			return nil
		})
}

func checkCmd() *command.Command {
	return withConfig("check", "check a configuration file (the tpm address as run opens it, ports 1-65535) and print it with its defaults",
		func(env *command.Env, file string, cfg *hostd.Config) error {
			key := "hostKey " + cfg.HostKey + " (a file key: the CA must allow file keys for this host's collection)"
			if cfg.TPMHostKeyMode() {
				key = fmt.Sprintf("host key in the TPM: tpmHostKey %s, sshdHostKey %s, hostKeyAgent %s", cfg.TPMHostKey, cfg.SSHDHostKey, cfg.HostKeyAgent)
			}
			fmt.Fprintf(env.Stdout, "%s: OK\n  caUrl %s\n  tpm %s\n  %s\n  hostCertificate %s\n  principals %s\n  trustedUserCAKeys %s\n  sshd %s -t -f %s\n  reload %+v\n  metricsAddress %s\n  renewFraction %.4f\n",
				file, cfg.CAURL, cfg.TPM, key, cfg.HostCertificate, principalsText(cfg.Principals), cfg.TrustedUserCAKeys,
				cfg.SSHD.Binary, cfg.SSHD.Config, cfg.Reload, cfg.MetricsAddress, cfg.RenewFraction)
			return nil
		})
}

// withConfig is a command that takes only --config and works on the loaded
// configuration.
func withConfig(name, summary string, run func(env *command.Env, file string, cfg *hostd.Config) error) *command.Command {
	var file string
	return &command.Command{
		Name: name, Summary: summary, Usage: "[--config FILE]",
		Flags: func(fs *flag.FlagSet) { configFlag(fs, &file) },
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
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

// principalsText is how check prints the configured principals.
func principalsText(p []string) string {
	if len(p) == 0 {
		return "none configured: the CA gives the names the inventory has for this host"
	}
	return strings.Join(p, ",")
}
