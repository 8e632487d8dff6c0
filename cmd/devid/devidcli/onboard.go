package devidcli

import (
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
)

// Onboarding: enrolment tokens for pending devices, rebinding a device to
// a new TPM, and what `devid device show` says a device holds.

func tokenCmd(c *conn) *command.Command {
	var ttl, out string
	return &command.Command{
		Name:    "token",
		Summary: "make a one-time enrolment token for a pending device: its first attestation with it binds its TPM",
		Usage:   "NAME|DEVICE-ID [--ttl 24h] [--out FILE] [--json]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&ttl, "ttl", "24h", "how long the token is valid: at least 1m, at most 720h (30 days)")
			fs.StringVar(&out, "out", "", "write the token to this `file` (mode 0600) instead of standard output")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one device name or ID"); err != nil {
				return err
			}
			if d, err := time.ParseDuration(ttl); err != nil || d <= 0 {
				return command.Usagef("--ttl %q: want a duration such as 24h or 90m", ttl)
			}
			if out != "" {
				if err := checkDestination(out); err != nil {
					return fmt.Errorf("token: --out %s: %w", out, err)
				}
			}
			return call(env, c, func(cl *adminapi.Client) (*adminapi.IssuedToken, error) {
				it, err := cl.IssueToken(args[0], ttl)
				if err == nil && out != "" {
					err = atomicfile.WriteFile(out, []byte(it.Token+"\n"), 0o600)
					it.Token = "" // in the file only
				}
				return it, err
			}, func(it *adminapi.IssuedToken) error {
				w := env.Stderr
				if out == "" {
					fmt.Fprintln(env.Stdout, it.Token)
				} else {
					w = env.Stdout
					fmt.Fprintf(w, "Wrote the token to %s.\n", out)
				}
				fmt.Fprintf(w, "Enrolment token for %s (pending %s, %s): sha256 %s, single use, valid until %s.\n",
					it.Device, it.Kind, it.DeviceID, it.Hash, it.Expires.Format(time.RFC3339))
				fmt.Fprintf(w, "It supersedes the device's earlier tokens. On the device: %s\n", tokenHint(it.Kind))
				return nil
			})
		},
	}
}

func tokenHint(k adminapi.Kind) string {
	if k == adminapi.KindHost {
		return `devid-hostd's configuration "enrolment": {"tokenFile": FILE}, or devid enroll --token-file FILE --type host.`
	}
	return `devid-agent's configuration "enrolment": {"tokenFile": FILE}, or devid enroll --token-file FILE --type user.`
}

func rebindCmd(c *conn) *command.Command {
	var reason, ekFile string
	return &command.Command{
		Name:    "rebind",
		Summary: "give a device a new TPM (a motherboard swap): the old TPM's record is retired, the device pending again or bound to --ek",
		Usage:   "NAME|DEVICE-ID --reason TEXT [--ek FILE] [--json]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&reason, "reason", "", "why, for the audit trail (required): one line, at most 1024 bytes")
			fs.StringVar(&ekFile, "ek", "", "the new TPM's EK public key or certificate `file` (PEM or DER; - for standard input); without it the device is pending until a token binds its new TPM")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one device name or ID"); err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return command.Usagef("--reason is required: say why the device has a new TPM")
			}
			req := adminapi.RebindRequest{Reason: reason}
			if ekFile != "" {
				b, err := readInput(env, ekFile)
				if err != nil {
					return err
				}
				req.EK = string(b)
				if !strings.HasPrefix(strings.TrimSpace(req.EK), "-----BEGIN") {
					req.EK = b64(b)
				}
			}
			return call(env, c, func(cl *adminapi.Client) (*adminapi.Rebound, error) { return cl.Rebind(args[0], req) }, func(r *adminapi.Rebound) error {
				fmt.Fprintf(env.Stdout, "The old TPM's record is retired as %s (%s): its certificates stay revoked.\n", r.Retired.Name, r.Retired.ID)
				fmt.Fprintf(env.Stdout, "%s (%s) is now %s.\n", r.Device.Name, r.Device.ID, r.Device.Status)
				if r.Device.Status == adminapi.StatusPending {
					fmt.Fprintf(env.Stdout, "Its next attestation binds the new TPM: give it a token from `devid device token %s`.\n", r.Device.Name)
				}
				return nil
			})
		},
	}
}

func showCmd(c *conn) *command.Command {
	return &command.Command{
		Name: "show", Summary: "show one device: its record, the SSH certificates it holds, its last attestation, its enrolment token", Usage: "NAME|DEVICE-ID",
		Flags: c.flags,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one device name or ID"); err != nil {
				return err
			}
			return call(env, c, func(cl *adminapi.Client) (*adminapi.DeviceDetails, error) { return cl.DeviceDetails(args[0]) }, func(d *adminapi.DeviceDetails) error {
				printDevice(env, &d.Device)
				printHoldings(env, d)
				return nil
			})
		},
	}
}

func printHoldings(env *command.Env, d *adminapi.DeviceDetails) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	if a := d.LastAttestation; a != nil {
		v := a.Time.Format(time.RFC3339) + ", TPM " + dash(tpmName(a))
		if a.Token != "" {
			v += ", bound by enrolment token " + a.Token
		}
		row("Last attestation", v)
	} else {
		row("Last attestation", "never")
	}
	row("Enrolment token", tokenLine(d))
	tw.Flush()
	if len(d.Certificates) == 0 {
		fmt.Fprintln(env.Stdout, "SSH certificates: none unexpired")
		return
	}
	fmt.Fprintln(env.Stdout, "SSH certificates (unexpired):")
	tw = tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERIAL\tTYPE\tVALID UNTIL\tPRINCIPALS\tREVOKED")
	for _, c := range d.Certificates {
		revoked := "-"
		switch {
		case !c.RevokedAt.IsZero():
			revoked = "by serial at " + c.RevokedAt.Format(time.RFC3339)
		case d.Status != adminapi.StatusActive:
			revoked = "with the device (" + string(d.Status) + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Serial, c.Type, c.ValidBefore.Format(time.RFC3339), strings.Join(c.Principals, ","), revoked)
	}
	tw.Flush()
}

func tpmName(a *adminapi.Attestation) string {
	var parts []string
	if a.Manufacturer != "" {
		parts = append(parts, "manufacturer "+a.Manufacturer)
	}
	if a.Model != "" {
		parts = append(parts, "model "+a.Model)
	}
	if a.FirmwareVersion != "" {
		parts = append(parts, "firmware "+a.FirmwareVersion)
	}
	return strings.Join(parts, ", ")
}

// tokenLine says where the device's newest enrolment token is: none /
// live until T / used at T by ID / expired at T / superseded at T.
func tokenLine(d *adminapi.DeviceDetails) string {
	t := d.Token
	if t == nil {
		if d.Status == adminapi.StatusPending {
			return "none (`devid device token " + d.Name + "` makes one)"
		}
		return "none"
	}
	var s string
	switch t.State {
	case "live":
		s = "live until " + t.Expires.Format(time.RFC3339)
	case "used":
		s = "used at " + t.Used.Format(time.RFC3339) + " by " + t.BoundTo
	case "expired":
		s = "expired at " + t.Expires.Format(time.RFC3339)
	case "superseded":
		s = "superseded at " + t.Superseded.Format(time.RFC3339)
	default:
		s = t.State
	}
	return fmt.Sprintf("%s (sha256 %s, issued by %s at %s)", s, t.Hash, t.IssuedBy, t.Issued.Format(time.RFC3339))
}

// tokenChange is what `devid audit` says of a device.token entry.
func tokenChange(e adminapi.AuditEntry) string {
	var a struct {
		Token      string    `json:"token"`
		Expires    time.Time `json:"expires"`
		Superseded []string  `json:"superseded"`
	}
	if json.Unmarshal(e.After, &a) != nil {
		return "?"
	}
	s := fmt.Sprintf("token sha256 %s until %s", a.Token, a.Expires.Format(time.RFC3339))
	if len(a.Superseded) > 0 {
		s += " (supersedes " + strings.Join(a.Superseded, ", ") + ")"
	}
	return s
}

// enrolmentFlags are devid enroll's token flags.
type enrolmentFlags struct{ token, file, name string }

func (f *enrolmentFlags) flags(fs *flag.FlagSet) {
	fs.StringVar(&f.file, "token-file", "", "a one-time enrolment token `file` (from devid device token): binds this TPM to a device registered without its EK")
	fs.StringVar(&f.token, "token", "", "the enrolment token itself (visible to other users of this machine while the command runs: prefer --token-file)")
	fs.StringVar(&f.name, "name", "", "with a token: the device's name in the inventory, which the CA checks the token is for")
}

// source is the enrolment the flags give, claiming the kind the
// certificate type implies; nil for none.
func (f *enrolmentFlags) source(certType string) (func() (*wire.Enrolment, error), error) {
	kind := "workstation"
	if certType == "host" {
		kind = "host"
	}
	switch {
	case f.token != "" && f.file != "":
		return nil, command.Usagef("give --token or --token-file, not both")
	case f.token != "":
		t, err := enroltoken.Parse(f.token)
		if err != nil {
			return nil, command.Usagef("--token: %v", err)
		}
		return enroll.Token(t, kind, f.name), nil
	case f.file != "":
		t, err := enroltoken.ReadFile(f.file)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		return enroll.Token(t, kind, f.name), nil
	case f.name != "":
		return nil, command.Usagef("--name is what the device claims with a token: give --token-file too")
	}
	return nil, nil
}
