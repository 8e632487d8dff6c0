// Package agentcli is the devid-agent command: run the agent, show its
// status, print the ssh_config lines that use it.
package agentcli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/sshagent"
)

// Main runs devid-agent with args and returns its exit code.
func Main(args []string, env *command.Env) int {
	return command.Run(root(), env, args)
}

func root() *command.Command {
	return &command.Command{
		Name:    "devid-agent",
		Summary: "devid-agent keeps your SSH key in this machine's TPM, its certificate from devid-ca current, and serves both to ssh as an agent.",
		Sub:     []*command.Command{runCmd(), statusCmd(), sshConfigCmd()},
	}
}

func configFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "config", agentd.DefaultConfigFile, "configuration `file`")
}

func runCmd() *command.Command {
	var file, format string
	return &command.Command{
		Name: "run", Summary: "run the agent until SIGTERM or SIGINT; SIGUSR1 renews the certificate now (systemd --user runs it; it takes the socket systemd passes, else makes its own)",
		Usage: "[--config FILE] [--log-format text|json]",
		Flags: func(fs *flag.FlagSet) {
			configFlag(fs, &file)
			fs.StringVar(&format, "log-format", "text", "log format on standard error (the journal keeps it): text or json")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			log, err := command.Logger(env, format)
			if err != nil {
				return err
			}
			cfg, err := agentd.LoadConfig(file, env.Getenv)
			if err != nil {
				return err
			}
			l, err := sshagent.ActivatedListener()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// SIGUSR1: renew the certificate now.
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			renewNow := make(chan struct{}, 1)
			go func() {
				for range usr1 {
					log.Info("renewal of the certificate requested (SIGUSR1)")
					select {
					case renewNow <- struct{}{}:
					default:
					}
				}
			}()
			d := &agentd.Daemon{Config: cfg, Log: log, Listener: l, RenewNow: renewNow, Ready: func() {
				if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
					log.Warn("systemd notification failed", "err", err)
				}
			}}
			return d.Run(ctx)
		},
	}
}

func statusCmd() *command.Command {
	var file string
	var asJSON bool
	return &command.Command{
		Name: "status", Summary: "show the key, the certificate (serial, principals, expiry, next renewal), the last error and the host CA keys and KRL; exit 0, or 1 with no status",
		Usage: "[--config FILE] [--json]",
		Flags: func(fs *flag.FlagSet) {
			configFlag(fs, &file)
			fs.BoolVar(&asJSON, "json", false, "print status.json as the agent wrote it")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			cfg, err := agentd.LoadConfig(file, env.Getenv)
			if err != nil {
				return err
			}
			st, err := agentd.ReadStatus(cfg.StateDir)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(env.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(env, st, time.Now())
			return nil
		},
	}
}

func printStatus(env *command.Env, s *agentd.Status, now time.Time) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := t.Sub(now).Round(time.Second)
		if d <= 0 {
			return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), -d)
		}
		return fmt.Sprintf("%s (in %s)", t.Local().Format(time.RFC3339), d)
	}
	fmt.Fprintf(tw, "devid-agent\tpid %d, status updated %s\n", s.PID, rel(s.Updated))
	fmt.Fprintf(tw, "socket\t%s\n", s.Socket)
	fmt.Fprintf(tw, "key\t%s (in the TPM; file %s)\n", s.Fingerprint, s.KeyFile)
	s.Certificate.Print(tw, "certificate", rel)
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", s.LastError)
	}
	fmt.Fprintf(tw, "host CA keys\t%d\n", s.HostCAKeys)
	fmt.Fprintf(tw, "KRL\tversion %d, built %s\n", s.KRLVersion, rel(s.KRLGenerated))
	fmt.Fprintf(tw, "signatures\t%d\n", s.Signatures)
	tw.Flush()
}

func sshConfigCmd() *command.Command {
	var file string
	return &command.Command{
		Name: "ssh-config", Summary: "print the ssh_config lines that make ssh use devid-agent (add them to ~/.ssh/config)",
		Usage: "[--config FILE]",
		Flags: func(fs *flag.FlagSet) { configFlag(fs, &file) },
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			cfg, err := agentd.LoadConfig(file, env.Getenv)
			if err != nil {
				return err
			}
			fmt.Fprint(env.Stdout, cfg.SSHConfig())
			return nil
		},
	}
}
