package devidcli

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
)

func collectionCmds() []*command.Command {
	var c conn
	var allowFileKeys optBool
	var hostNames optList
	set := &command.Command{
		Name: "set", Summary: "create or change a collection's policy (what is not given is kept)",
		Usage: "NAME [--allow-file-keys=true|false] [--host-names N1,N2,...]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.Var(&allowFileKeys, "allow-file-keys", "sign SSH keys that are not the device's TPM key too, without the key:tpm principal (a migration aid): true or false")
			fs.Var(&hostNames, "host-names", "comma-separated host `names` every host of the collection may have: exact names, addresses, *.label patterns (* is one label), CIDR prefixes; '' clears")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one collection name"); err != nil {
				return err
			}
			if !allowFileKeys.set && !hostNames.set {
				return command.Usagef("nothing to set: give --allow-file-keys or --host-names")
			}
			var u adminapi.CollectionUpdate
			if allowFileKeys.set {
				u.AllowFileKeys = &allowFileKeys.v
			}
			if hostNames.set {
				u.HostNames = &hostNames.v
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.Collection, error) { return cl.SetCollection(args[0], u) }, func(col *adminapi.Collection) error {
				printCollection(env, col)
				return nil
			})
		},
	}
	list := &command.Command{
		Name: "list", Summary: "list collections: those set, and those devices are in (with the defaults)", Flags: c.flags,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) ([]*adminapi.Collection, error) { return cl.Collections() }, func(cols []*adminapi.Collection) error {
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tFILE KEYS\tHOST NAMES")
				for _, col := range cols {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", col.Name, fileKeys(col.AllowFileKeys), dash(strings.Join(col.HostNames, ",")))
				}
				return tw.Flush()
			})
		},
	}
	show := &command.Command{
		Name: "show", Summary: "show one collection", Usage: "NAME",
		Flags: c.flags,
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one collection name"); err != nil {
				return err
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.Collection, error) { return cl.Collection(args[0]) }, func(col *adminapi.Collection) error {
				printCollection(env, col)
				return nil
			})
		},
	}
	return []*command.Command{set, list, show}
}

func fileKeys(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "refused"
}

func printCollection(env *command.Env, col *adminapi.Collection) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", col.Name)
	row("File keys", fileKeys(col.AllowFileKeys)+map[bool]string{true: " (signed without key:tpm)", false: " (only keys in the device's TPM are signed)"}[col.AllowFileKeys])
	row("Host names", dash(strings.Join(col.HostNames, ", ")))
	if col.Created.IsZero() {
		row("Set", "never (the defaults)")
	} else {
		row("Created", col.Created.Format(time.RFC3339))
		row("Updated", col.Updated.Format(time.RFC3339))
	}
	tw.Flush()
}

// optBool is a boolean flag that knows whether it was given.
type optBool struct{ v, set bool }

func (b *optBool) String() string   { return strconv.FormatBool(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, not %q", s)
	}
	b.v, b.set = v, true
	return nil
}

// optList is a comma-separated list flag that knows whether it was given
// (” is the empty list).
type optList struct {
	v   []string
	set bool
}

func (l *optList) String() string { return strings.Join(l.v, ",") }
func (l *optList) Set(s string) error {
	l.v, l.set = []string{}, true
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			l.v = append(l.v, e)
		}
	}
	return nil
}
