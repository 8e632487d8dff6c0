package cacli

import (
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/internal/command"
)

func restoreCmd() *command.Command {
	var dir, from string
	var skip uint64
	return &command.Command{
		Name:    "restore",
		Summary: "put a backup (devid backup) in place of a stopped CA's store; run as root, the restored store is the CA directory owner's",
		Usage:   "--from FILE --dir DIR [--krl-version-skip N]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&from, "from", "", "the backup `file` (required; read once: may be a pipe)")
			fs.StringVar(&dir, "dir", "", "the CA directory, holding "+caserver.ConfigFile+" (required); no devid-ca may be serving from it")
			fs.Uint64Var(&skip, "krl-version-skip", 1000000,
				"the restored CA's next KRL version jumps this far past the backup's, past the versions hosts installed since the backup")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if from == "" || dir == "" {
				return command.Usagef("--from and --dir are required")
			}
			if skip == 0 {
				return command.Usagef("--krl-version-skip must be at least 1: hosts refuse a KRL version they have seen")
			}
			res, err := caserver.Restore(caserver.RestoreOptions{
				Config: filepath.Join(dir, caserver.ConfigFile), From: from, KRLVersionSkip: skip, Now: time.Now(),
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Restored %s from %s (%d bytes: %d devices, %d users, %d audit entries).\n",
				res.Store, from, res.Info.Size, res.Info.Entries["devid_devices"], res.Info.Entries["devid_users"], res.Info.Entries["devid_audit"])
			if res.Owner != nil {
				fmt.Fprintf(env.Stdout, "It belongs to uid %d, gid %d, as %s does: the user devid-ca serves as.\n", res.Owner.UID, res.Owner.GID, dir)
			}
			if res.Kept != "" {
				fmt.Fprintf(env.Stdout, "The store it replaced is kept as %s.\n", res.Kept)
			}
			fmt.Fprintf(env.Stdout, "KRL: the backup's version is %d; the next the CA publishes is %d or later.\nStart the CA: systemctl start devid-ca\n", res.KRLFrom, res.KRLNext)
			return nil
		},
	}
}
