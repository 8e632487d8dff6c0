package devidcli

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
)

// userLifecycleCmds are devid user show, disable, enable and delete:
// off-boarding.
func userLifecycleCmds() []*command.Command {
	var c conn
	show := &command.Command{
		Name: "show", Summary: "show a user: their status, groups and devices", Usage: "EMAIL [--json]",
		Flags: c.flags,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one user email"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.UserDevices, error) { return cl.UserDevices(args[0]) }, func(ud *adminapi.UserDevices) error {
				return printUser(env, ud)
			})
		},
	}
	var reason string
	reasonFlag := func(fs *flag.FlagSet) {
		c.flags(fs)
		fs.StringVar(&reason, "reason", "", "why, for the audit trail: one line, at most 1024 bytes")
	}
	disable := &command.Command{
		Name: "disable", Usage: "EMAIL [--reason TEXT] [--json]",
		Summary: "off-board a user: revoke the SSH user certificates their devices hold (and any naming them) at once; no device of theirs gets a new one until enabled",
		Flags:   reasonFlag,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one user email"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.UserDevices, error) {
				return cl.SetUserDisabled(args[0], true, reason)
			}, func(ud *adminapi.UserDevices) error {
				fmt.Fprintf(env.Stdout, "%s is now disabled: the SSH user certificates of %s, and any naming them, are revoked; none is issued to them until they are enabled\n",
					ud.User.Email, devicesPhrase(ud.Devices, "their devices"))
				return nil
			})
		},
	}
	enable := &command.Command{
		Name: "enable", Usage: "EMAIL [--reason TEXT] [--json]",
		Summary: "let a disabled user's devices get certificates again (those revoked stay revoked: the devices enrol anew)",
		Flags:   reasonFlag,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one user email"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.UserDevices, error) {
				return cl.SetUserDisabled(args[0], false, reason)
			}, func(ud *adminapi.UserDevices) error {
				fmt.Fprintf(env.Stdout, "%s is now enabled: %s may get new certificates; those revoked stay revoked\n",
					ud.User.Email, devicesPhrase(ud.Devices, "their devices"))
				return nil
			})
		},
	}
	del := &command.Command{
		Name: "delete", Usage: "EMAIL [--reason TEXT] [--json]",
		Summary: "delete a user: revoke as disable does; their devices lose their owner, and their active workstations are quarantined",
		Flags:   reasonFlag,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one user email"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.UserDevices, error) { return cl.DeleteUser(args[0], reason) }, func(ud *adminapi.UserDevices) error {
				fmt.Fprintf(env.Stdout, "deleted %s; their SSH user certificates are revoked\n", ud.User.Email)
				for _, d := range ud.Devices {
					fmt.Fprintf(env.Stdout, "device %s (%s): no owner now, %s\n", d.Name, d.ID, d.Status)
				}
				return nil
			})
		},
	}
	return []*command.Command{show, disable, enable, del}
}

// devicesPhrase names devices in a sentence: "laptop-a and laptop-b",
// or none if there are none.
func devicesPhrase(devs []*adminapi.Device, none string) string {
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
	}
	switch len(names) {
	case 0:
		return none + " (none)"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func printUser(env *command.Env, ud *adminapi.UserDevices) error {
	u := ud.User
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Email", u.Email)
	row("ID", u.ID)
	row("Login", u.Login)
	row("Groups", dash(strings.Join(u.Groups, ", ")))
	if u.Disabled {
		row("Status", "disabled (no device of theirs gets a certificate)")
		if u.DisabledBy != "" {
			row("Disabled by", u.DisabledBy)
		}
	} else {
		row("Status", "enabled")
	}
	if u.StatusReason != "" {
		row("Status reason", u.StatusReason)
	}
	if !u.StatusChanged.IsZero() {
		row("Status changed", u.StatusChanged.Format(time.RFC3339))
	}
	if sc := u.SCIM; sc != nil {
		row("SCIM userName", sc.UserName)
		if sc.ExternalID != "" {
			row("SCIM externalId", sc.ExternalID)
		}
		name := sc.DisplayName
		if name == "" {
			name = strings.TrimSpace(sc.GivenName + " " + sc.FamilyName)
		}
		if name != "" {
			row("SCIM name", name)
		}
	}
	row("Created", u.Created.Format(time.RFC3339))
	row("Updated", u.Updated.Format(time.RFC3339))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	if len(ud.Devices) == 0 {
		fmt.Fprintln(env.Stdout, "Devices: none")
		return nil
	}
	tw = tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tKIND\tSTATUS\tCOLLECTION\tDEVICE ID")
	for _, d := range ud.Devices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Kind, d.Status, dash(d.Collection), d.ID)
	}
	return tw.Flush()
}
