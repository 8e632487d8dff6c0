// Package devidcli is the devid operator command: register, list,
// quarantine and retire devices, import inventories, manage users, set
// collections' policies (file keys, host names), read the
// audit trail, revoke certificates, inspect and query KRLs, enrol a device
// by hand, and bootstrap trust in a CA. It talks to devid-ca through
// package adminapi's client only: it does not link the CA's stores.
package devidcli

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
)

// Main runs the devid command with args (without the program name) and
// returns its exit code.
func Main(args []string, env *command.Env) int {
	return command.Run(root(), env, args)
}

func root() *command.Command {
	return &command.Command{
		Name:    "devid",
		Summary: "devid manages which machines may reach company hosts over SSH.",
		Sub: []*command.Command{
			bootstrapCmd(),
			{Name: "device", Summary: "register, list, quarantine, retire and import devices; enrolment tokens; rebind to a new TPM", Sub: deviceCmds()},
			{Name: "user", Summary: "add, list, import, show, disable, enable and delete users", Sub: userCmds()},
			{Name: "collection", Summary: "set, list and show collections' policies (file keys, host names)", Sub: collectionCmds()},
			{Name: "cert", Summary: "revoke single SSH certificates", Sub: certCmds()},
			auditCmd(),
			enrollCmd(),
			{Name: "tpm", Summary: "read this machine's TPM: its endorsement keys, device ID, and how to register it", Sub: tpmCmds()},
			krlCmd(),
			backupCmd(),
		},
	}
}

func deviceCmds() []*command.Command {
	var c conn
	var nd adminapi.NewDevice
	var ekFile string
	var hostNames optList
	add := &command.Command{
		Name: "add", Summary: "register a device by its TPM's EK, or as pending by its serial number or asset tag",
		Usage: "(--ek FILE | --serial S | --asset-tag T) --name NAME --kind host|workstation [flags]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&ekFile, "ek", "", "EK public key or EK certificate `file` (PEM or DER; - for standard input)")
			fs.StringVar(&nd.Name, "name", "", "device name, unique (required)")
			fs.StringVar(&nd.Kind, "kind", "", "host or workstation (required)")
			fs.StringVar(&nd.Collection, "collection", "", "collection (named group of like devices)")
			fs.StringVar(&nd.Owner, "owner", "", "owner's email (a user added before)")
			fs.StringVar(&nd.Status, "status", "", "initial status (default active; pending without --ek)")
			fs.StringVar(&nd.Serial, "serial", "", "the machine's serial number (unique); without --ek the device is pending until its first attestation, with a token from devid device token")
			fs.StringVar(&nd.AssetTag, "asset-tag", "", "the machine's asset tag")
			fs.StringVar(&nd.OS, "os", "", "the machine's operating system, for the record")
			fs.Var(&hostNames, "host-names", "comma-separated `names` a host may have in its SSH host certificates besides its name: exact names, addresses, *.label patterns (* is one label), CIDR prefixes")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if nd.Name == "" || nd.Kind == "" {
				return command.Usagef("--name and --kind are required")
			}
			if ekFile == "" && nd.Serial == "" && nd.AssetTag == "" {
				return command.Usagef("give --ek (the TPM's EK: `devid tpm info` on the machine prints it), or --serial or --asset-tag to register the device as pending")
			}
			if ekFile != "" {
				b, err := readInput(env, ekFile)
				if err != nil {
					return err
				}
				nd.EK = string(b)
				if !strings.HasPrefix(strings.TrimSpace(nd.EK), "-----BEGIN") {
					nd.EK = b64(b) // DER
				}
			}
			nd.HostNames = hostNames.v
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.Device, error) { return cl.AddDevice(nd) }, func(d *adminapi.Device) error {
				fmt.Fprintf(env.Stdout, "registered %s (%s) as %s\n", d.Name, d.ID, d.Status)
				if d.Status == adminapi.StatusPending {
					fmt.Fprintf(env.Stdout, "its first attestation binds its TPM: give it a token from `devid device token %s`\n", d.Name)
				}
				return nil
			})
		},
	}
	var filter struct{ status, kind, collection, owner string }
	list := &command.Command{
		Name: "list", Summary: "list devices", Usage: "[--status S] [--kind K] [--collection C] [--owner EMAIL]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&filter.status, "status", "", "only devices with this status: active, quarantined, retired or pending")
			fs.StringVar(&filter.kind, "kind", "", "only devices of this kind: host or workstation")
			fs.StringVar(&filter.collection, "collection", "", "only devices in this collection (an error if no device is in it)")
			fs.StringVar(&filter.owner, "owner", "", "only devices of this owner (an error if no such user)")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if _, err := adminapi.ParseStatus(filter.status); filter.status != "" && err != nil {
				return command.Usagef("--status: %v", err)
			}
			if _, err := adminapi.ParseKind(filter.kind); filter.kind != "" && err != nil {
				return command.Usagef("--kind: %v", err)
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": filter.status, "kind": filter.kind, "collection": filter.collection, "owner": filter.owner} {
				if v != "" {
					q.Set(k, v)
				}
			}
			return call(env, &c, func(cl *adminapi.Client) ([]*adminapi.Device, error) { return cl.Devices(q) }, func(devs []*adminapi.Device) error {
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tSTATUS\tCOLLECTION\tOWNER\tDEVICE ID")
				for _, d := range devs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Kind, statusText(d), dash(d.Collection), dash(d.Owner), d.ID)
				}
				return tw.Flush()
			})
		},
	}
	cmds := []*command.Command{add, list, showCmd(&c), tokenCmd(&c), rebindCmd(&c), quarantineCmd(&c)}
	for _, st := range []struct {
		name   string
		status adminapi.Status
		what   string
	}{
		{"retire", adminapi.StatusRetired, "retire a device for good"},
		{"activate", adminapi.StatusActive, "bring a quarantined device back (its earlier certificates stay revoked)"},
	} {
		var reason string
		cmds = append(cmds, &command.Command{
			Name: st.name, Summary: st.what, Usage: "NAME|DEVICE-ID [--reason TEXT]",
			Flags: func(fs *flag.FlagSet) {
				c.flags(fs)
				fs.StringVar(&reason, "reason", "", "why, for the audit trail: one line, at most 1024 bytes")
			},
			Run: func(env *command.Env, args []string) error {
				if err := command.Args(args, 1, 1, "one device name or ID"); err != nil {
					return err
				}
				return call(env, &c, func(cl *adminapi.Client) (*adminapi.Device, error) { return cl.SetStatus(args[0], st.status, reason) }, func(d *adminapi.Device) error {
					fmt.Fprintf(env.Stdout, "%s (%s) is now %s\n", d.Name, d.ID, d.Status)
					return nil
				})
			},
		})
	}
	return append(cmds, deviceImportCmd(&c))
}

func importCmd(what string, c *conn) *command.Command {
	var dryRun bool
	return &command.Command{
		Name: "import", Usage: "FILE [--dry-run]",
		Summary: "add or update " + what + " from a CSV or JSON export; every row checked before any is written",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.BoolVar(&dryRun, "dry-run", false, "check and report, change nothing")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one file (- for standard input)"); err != nil {
				return err
			}
			in, err := openInput(env, args[0])
			if err != nil {
				return err
			}
			defer in.Close()
			imp := func(cl *adminapi.Client) (*adminapi.ImportReport, error) {
				if what == "users" {
					return cl.ImportUsersFrom(args[0], in, dryRun)
				}
				return cl.ImportDevicesFrom(args[0], in, dryRun)
			}
			return call(env, c, imp, func(rep *adminapi.ImportReport) error {
				printImportReport(env, rep)
				return nil
			})
		},
	}
}

// printImportReport prints what an import did: each row that is not
// unchanged, then the counts.
func printImportReport(env *command.Env, rep *adminapi.ImportReport) {
	for _, r := range rep.Results {
		if r.Result == adminapi.Unchanged {
			continue
		}
		where := fmt.Sprintf("line %d", r.Line)
		if r.Line == 0 {
			where = "not in the file"
		}
		fmt.Fprintf(env.Stdout, "%s: %s %s (%s)", where, r.Result, r.Name, r.Subject)
		if len(r.Changes) > 0 {
			fmt.Fprintf(env.Stdout, ": %s", strings.Join(r.Changes, ", "))
		}
		if r.Note != "" {
			fmt.Fprintf(env.Stdout, "; %s", r.Note)
		}
		fmt.Fprintln(env.Stdout)
	}
	verb := "imported"
	if rep.DryRun {
		verb = "dry run, nothing written"
	}
	fmt.Fprintf(env.Stdout, "%s: %d added, %d updated, %d unchanged, %d held", verb,
		rep.Counts[adminapi.Added], rep.Counts[adminapi.Updated], rep.Counts[adminapi.Unchanged], rep.Counts[adminapi.Held])
	if _, mdm := rep.Counts[adminapi.Missing]; mdm {
		fmt.Fprintf(env.Stdout, ", %d missing (%d quarantined, %d left as they are)",
			rep.Counts[adminapi.Missing]+rep.Counts[adminapi.MissingQuarantined], rep.Counts[adminapi.MissingQuarantined], rep.Counts[adminapi.Missing])
	}
	fmt.Fprintln(env.Stdout)
}

func userCmds() []*command.Command {
	var c conn
	var nu adminapi.NewUser
	var groups string
	add := &command.Command{
		Name: "add", Summary: "add a user", Usage: "--email EMAIL --login NAME [--groups G1,G2]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&nu.Email, "email", "", "the user's IdP email (required)")
			fs.StringVar(&nu.Login, "login", "", "login name (required)")
			fs.StringVar(&groups, "groups", "", "comma-separated IdP groups")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if nu.Email == "" || nu.Login == "" {
				return command.Usagef("--email and --login are required")
			}
			if groups != "" {
				nu.Groups = strings.Split(groups, ",")
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.User, error) { return cl.AddUser(nu) }, func(u *adminapi.User) error {
				fmt.Fprintf(env.Stdout, "added %s (login %s, groups %s)\n", u.Email, u.Login, dash(strings.Join(u.Groups, ",")))
				return nil
			})
		},
	}
	list := &command.Command{
		Name: "list", Summary: "list users", Flags: c.flags,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) ([]*adminapi.User, error) { return cl.Users() }, func(users []*adminapi.User) error {
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EMAIL\tLOGIN\tGROUPS\tSTATUS")
				for _, u := range users {
					status := "enabled"
					if u.Disabled {
						status = "disabled"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Email, u.Login, dash(strings.Join(u.Groups, ",")), status)
				}
				return tw.Flush()
			})
		},
	}
	return append([]*command.Command{add, list, importCmd("users", &c)}, userLifecycleCmds()...)
}

func auditCmd() *command.Command {
	var c conn
	var subject string
	return &command.Command{
		Name: "audit", Summary: "show the inventory's audit trail, oldest first", Usage: "[--subject NAME|DEVICE-ID|EMAIL]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&subject, "subject", "", "only entries about this device or user")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) ([]adminapi.AuditEntry, error) { return cl.Audit(subject) }, func(entries []adminapi.AuditEntry) error {
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tADMIN\tACTION\tSUBJECT\tCHANGE")
				for _, e := range entries {
					subject := e.Subject
					if e.SubjectName != "" {
						subject = e.SubjectName + " (" + e.Subject + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Actor, e.Action, subject, auditChange(e))
				}
				return tw.Flush()
			})
		},
	}
}

func printDevice(env *command.Env, d *adminapi.Device) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", d.Name)
	row("Device ID", d.ID)
	row("Kind", string(d.Kind))
	row("Status", string(d.Status))
	if d.StatusReason != "" {
		row("Status reason", d.StatusReason)
	}
	row("Status changed", d.StatusChanged.Format(time.RFC3339))
	if d.QuarantineUntil != nil {
		row("Quarantined until", d.QuarantineUntil.UTC().Format(time.RFC3339)+" (then devid-ca activates it; devid device activate ends it sooner)")
	}
	row("Collection", dash(d.Collection))
	row("Owner", dash(d.Owner))
	for _, f := range [][2]string{{"Serial", d.Serial}, {"Asset tag", d.AssetTag}, {"OS", d.OS}, {"Source", d.Source}, {"Source ID", d.SourceID}} {
		if f[1] != "" {
			row(f[0], f[1])
		}
	}
	if d.Kind == adminapi.KindHost || len(d.HostNames) > 0 {
		row("Host names", dash(strings.Join(d.HostNames, ", ")))
	}
	if d.Status == adminapi.StatusPending {
		row("TPM", "none bound yet: its first attestation binds one")
	} else {
		row("EK certificate", map[bool]string{true: "yes", false: "no"}[len(d.EKCert) > 0])
	}
	row("Created", d.Created.Format(time.RFC3339))
	row("Updated", d.Updated.Format(time.RFC3339))
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// call runs fn with an admin API client and prints its result: as JSON
// with --json, else with human.
func call[T any](env *command.Env, c *conn, fn func(*adminapi.Client) (T, error), human func(T) error) error {
	cl, err := c.client(env)
	if err != nil {
		return err
	}
	v, err := fn(cl)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(env, v)
	}
	return human(v)
}
