package devidcli

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
)

func certCmds() []*command.Command {
	var c conn
	var reason string
	revoke := &command.Command{
		Name: "revoke", Summary: "revoke one SSH certificate, by serial or by its file; every host refuses it within seconds (revoking it again is refused: the first revocation stays)",
		Usage: "SERIAL|CERT-FILE [--reason TEXT]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&reason, "reason", "", "why, for the audit trail: one line, at most 1024 bytes")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "a serial or a certificate file"); err != nil {
				return err
			}
			req := adminapi.RevokeRequest{Reason: reason}
			if n, err := adminapi.ParseSerial(args[0]); err == nil {
				req.Serial = n
			} else {
				b, err := os.ReadFile(args[0])
				if err != nil {
					return fmt.Errorf("%s is neither a serial nor a readable certificate file: %w", args[0], err)
				}
				req.Certificate = string(b)
			}
			return call(env, &c, func(cl *adminapi.Client) (*adminapi.RevokedCert, error) { return cl.RevokeCert(req) },
				func(rc *adminapi.RevokedCert) error {
					fmt.Fprintf(env.Stdout, "revoked %s certificate %s (key ID %s); it would have expired at %s\n",
						rc.Type, rc.Serial, rc.KeyID, rc.NotAfter.Format(time.RFC3339))
					return nil
				})
		},
	}
	return []*command.Command{revoke}
}

// revokeChange summarises a cert.revoke audit entry: which certificate, and
// why.
func revokeChange(e adminapi.AuditEntry) string {
	var rc adminapi.RevokedCert
	if json.Unmarshal(e.After, &rc) != nil {
		return "?"
	}
	s := fmt.Sprintf("revoked %s certificate serial %s, key ID %q, valid until %s", rc.Type, rc.Serial, rc.KeyID, rc.NotAfter.Format(time.RFC3339))
	if e.Reason != "" {
		s += fmt.Sprintf(" (%s)", e.Reason)
	}
	return s
}
