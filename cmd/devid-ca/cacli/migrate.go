package cacli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/internal/command"
)

func migrateCmd() *command.Command {
	var dir, to, database string
	var replace, writeConfig, asJSON bool
	return &command.Command{
		Name:    "migrate",
		Summary: "copy a stopped CA's bbolt store (every table, step-ca's and devid's) into PostgreSQL, verified row by row",
		Usage:   "--dir DIR --to CONNSTRING [--database NAME] [--replace] [--write-config] [--json]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dir, "dir", "", "the CA directory, holding "+caserver.ConfigFile+" (required); its db must be bbolt, and no devid-ca may be serving from it")
			fs.StringVar(&to, "to", "", "the target's PostgreSQL connection string, keyword/value or URL, e.g. 'host=db.example.com user=devid dbname=devid' (required); the database must exist")
			fs.StringVar(&database, "database", "", "the target database, in place of the one the connection string names")
			fs.BoolVar(&replace, "replace", false, "empty the target's devid-ca tables that hold rows before copying (else such a target is refused)")
			fs.BoolVar(&writeConfig, "write-config", false, "once the copy is verified, set db in the config file to the target (atomically); else print the change to make")
			fs.BoolVar(&asJSON, "json", false, "print a JSON summary")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if dir == "" || to == "" {
				return command.Usagef("--dir and --to are required")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, err := caserver.Migrate(ctx, caserver.MigrateOptions{
				Config: filepath.Join(dir, caserver.ConfigFile), DataSource: to, Database: database,
				Replace: replace, WriteConfig: writeConfig,
			})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(env.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(env.Stdout, "Copied %s into PostgreSQL database %s: %d tables, %d rows, %d bytes, verified row by row.\n",
				res.Store, res.Database, len(res.Tables), res.Rows, res.Bytes)
			for _, t := range res.Replaced {
				fmt.Fprintf(env.Stdout, "  (emptied first: %s, %d rows)\n", t.Name, t.Rows)
			}
			fmt.Fprintf(env.Stdout, "KRL: version %d; the CA on PostgreSQL goes on from it.\n", res.KRLVersion)
			db, _ := json.MarshalIndent(res.ConfigDB, "  ", "  ")
			if res.ConfigWritten {
				fmt.Fprintf(env.Stdout, "%s now has:\n  \"db\": %s\n", res.Config, db)
			} else {
				fmt.Fprintf(env.Stdout, "%s is unchanged. To serve from PostgreSQL, set in it:\n  \"db\": %s\n(or run again with --replace --write-config)\n", res.Config, db)
			}
			fmt.Fprintf(env.Stdout, "The bbolt store is left as it was: keep it as a backup, and start no devid-ca on it again.\nStart the CA: systemctl start devid-ca\n")
			return nil
		},
	}
}
