package devidcli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/internal/storebackup"
)

func backupCmd() *command.Command {
	c := &conn{}
	var out string
	return &command.Command{
		Name:    "backup",
		Summary: "copy the CA's embedded store while it serves (admin API), for devid-ca restore",
		Usage:   "--out FILE [connection flags]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&out, "out", "", "the `file` to write (required; not overwritten)")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if out == "" {
				return command.Usagef("--out is required")
			}
			if _, err := os.Lstat(out); err == nil {
				return fmt.Errorf("%s exists: not overwriting", out)
			}
			cl, err := c.client(env)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			// Written beside out and renamed once whole and checked: out
			// is never a partial copy.
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := cl.Backup(ctx, tmp)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			info, err := storebackup.Check(tmp.Name())
			if err != nil {
				return fmt.Errorf("the CA sent a copy that does not check: %w", err)
			}
			if err := os.Link(tmp.Name(), out); err != nil {
				return err
			}
			// The new name on disk too, not just the bytes.
			if err := syncDir(filepath.Dir(out)); err != nil {
				return fmt.Errorf("%s written, but: %w", out, err)
			}
			if c.json {
				return writeJSON(env, map[string]any{"file": out, "bytes": n, "entries": info.Entries})
			}
			fmt.Fprintf(env.Stdout, "%s: %d bytes (%d devices, %d users, %d audit entries), checked\n",
				out, n, info.Entries["devid_devices"], info.Entries["devid_users"], info.Entries["devid_audit"])
			return nil
		},
	}
}

// syncDir flushes dir's entries (a file linked in it) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
