package cacli

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/scim"
)

// scimTokenCmd is devid-ca scim-token: a new bearer token for a SCIM
// client, and the configuration entry that lets it in (its SHA-256 only).
func scimTokenCmd() *command.Command {
	var name, out string
	var asJSON bool
	return &command.Command{
		Name:    "scim-token",
		Summary: "make a bearer token for a SCIM client (Okta, Entra ID) and print the config entry that lets it in",
		Usage:   "--name NAME [--out FILE] [--json]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "the client's name, recorded as scim:NAME in the audit trail (required; a-z 0-9 . _ -)")
			fs.StringVar(&out, "out", "", "write the token to `FILE` (mode 0600, not overwritten) instead of printing it")
			fs.BoolVar(&asJSON, "json", false, "print JSON: name, token (unless --out), tokenSHA256 and the config entry")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if name == "" {
				return command.Usagef("--name is required")
			}
			token, sum, err := scim.NewToken()
			if err != nil {
				return err
			}
			if _, err := scim.ParseClient(name, sum); err != nil {
				return command.Usagef("--name: %v", err)
			}
			if out != "" {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists: not overwriting", out)
				}
				if err := atomicfile.WriteFile(out, []byte(token+"\n"), 0o600); err != nil {
					return err
				}
			}
			entry := struct {
				Name        string `json:"name"`
				TokenSHA256 string `json:"tokenSHA256"`
			}{name, sum}
			if asJSON {
				v := struct {
					Name        string `json:"name"`
					Token       string `json:"token,omitempty"`
					TokenFile   string `json:"tokenFile,omitempty"`
					TokenSHA256 string `json:"tokenSHA256"`
					Config      any    `json:"config"`
				}{Name: name, TokenSHA256: sum, Config: entry}
				if out == "" {
					v.Token = token
				} else {
					v.TokenFile = out
				}
				b, _ := json.MarshalIndent(v, "", "  ")
				_, err := fmt.Fprintf(env.Stdout, "%s\n", b)
				return err
			}
			line, _ := json.Marshal(entry)
			if out == "" {
				fmt.Fprintf(env.Stdout, "Bearer token for SCIM client %s (shown once; devid-ca keeps only its SHA-256):\n\n  %s\n\n", name, token)
			} else {
				fmt.Fprintf(env.Stdout, "Wrote the bearer token for SCIM client %s to %s (devid-ca keeps only its SHA-256).\n\n", name, out)
			}
			fmt.Fprintf(env.Stdout, `Give the IdP the token (Okta: Authentication Mode "HTTP Header", Authorization;
Entra ID: Secret Token) and the base URL https://CA-HOST:PORT/scim/v2.
Add this entry to "scim" → "clients" in devid-ca's configuration, then restart devid-ca:

  %s

To rotate, add a new client beside the old one, move the IdP to its token, then remove the old one.
`, line)
			return nil
		},
	}
}
