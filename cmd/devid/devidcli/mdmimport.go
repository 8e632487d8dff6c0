package devidcli

import (
	"flag"
	"fmt"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
)

// deviceImportCmd is `devid device import`: devid's own CSV or JSON
// export, or an MDM's (--format jamf|intune).
func deviceImportCmd(c *conn) *command.Command {
	var dryRun bool
	var opts adminapi.MDMImport
	return &command.Command{
		Name: "import", Usage: "[--format devid|jamf|intune] FILE [--dry-run] [--missing keep|quarantine] [--kind K] [--collection C]",
		Summary: "add or update devices from a CSV or JSON export (devid's, Jamf Pro's or Intune's); every row checked before any is written",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.BoolVar(&dryRun, "dry-run", false, "check and report, change nothing")
			fs.StringVar(&opts.Format, "format", "devid", "the export's format: devid (columns id, ek, name, kind, …), jamf (Jamf Pro: GET /api/v1/computers-inventory JSON, or an advanced computer search's CSV) or intune (Microsoft Graph managedDevices JSON, or the admin center's Devices > All devices CSV)")
			fs.StringVar(&opts.Missing, "missing", "", "with jamf or intune: what to do with the devices of that source the export no longer lists: keep (default; they are reported) or quarantine")
			fs.StringVar(&opts.Kind, "kind", "", "with jamf or intune: every listed device's kind, host or workstation (default: workstation for a new device, a known one keeps its kind)")
			fs.StringVar(&opts.Collection, "collection", "", "with jamf or intune: every listed device's collection; --missing then looks only at that collection's devices")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one file (- for standard input)"); err != nil {
				return err
			}
			mdm := false
			switch opts.Format {
			case "devid":
				if opts.Missing != "" || opts.Kind != "" || opts.Collection != "" {
					return command.Usagef("--missing, --kind and --collection are for an MDM's export: give --format jamf or intune")
				}
			case "jamf", "intune":
				mdm = true
			default:
				return command.Usagef("--format: %q: want devid, jamf or intune", opts.Format)
			}
			switch opts.Missing {
			case "", "keep", "quarantine":
			default:
				return command.Usagef("--missing: %q: want keep or quarantine", opts.Missing)
			}
			if _, err := adminapi.ParseKind(opts.Kind); opts.Kind != "" && err != nil {
				return command.Usagef("--kind: %v", err)
			}
			in, err := openInput(env, args[0])
			if err != nil {
				return err
			}
			defer in.Close()
			imp := func(cl *adminapi.Client) (*adminapi.ImportReport, error) {
				if mdm {
					return cl.ImportMDMFrom(args[0], in, opts, dryRun)
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

// quarantineCmd is `devid device quarantine`, for good or --for a time.
func quarantineCmd(c *conn) *command.Command {
	var req adminapi.StatusRequest
	var dur time.Duration
	return &command.Command{
		Name: "quarantine", Usage: "NAME|DEVICE-ID [--for DURATION] [--reason TEXT]",
		Summary: "stop a device getting certificates and revoke those it holds (reversible; --for ends it by itself)",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&req.Reason, "reason", "", "why, for the audit trail: one line, at most 1024 bytes")
			fs.DurationVar(&dur, "for", 0, "a temporary quarantine: `duration` (1m to 8784h, e.g. 2h) after which devid-ca activates the device again, revoking what it held before as devid device activate does; a device in a temporary quarantine gets the new end, or none without --for")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one device name or ID"); err != nil {
				return err
			}
			if dur < 0 {
				return command.Usagef("--for: %v: want a positive duration", dur)
			}
			req.Status = adminapi.StatusQuarantined
			if dur > 0 {
				req.For = dur.String()
			}
			return call(env, c, func(cl *adminapi.Client) (*adminapi.Device, error) { return cl.ChangeStatus(args[0], req) }, func(d *adminapi.Device) error {
				fmt.Fprintf(env.Stdout, "%s (%s) is now %s\n", d.Name, d.ID, statusText(d))
				return nil
			})
		},
	}
}

// statusText is a device's status, with the end of a temporary quarantine.
func statusText(d *adminapi.Device) string {
	if d.QuarantineUntil != nil {
		return fmt.Sprintf("%s until %s", d.Status, d.QuarantineUntil.UTC().Format(time.RFC3339))
	}
	return string(d.Status)
}
