package caserver

import (
	"fmt"

	"github.com/devid-ssh/devid/scim"
)

// clients checks the SCIM clients and returns them as package scim takes
// them: names and tokens unique.
func (c *SCIMConfig) clients() ([]scim.Client, error) {
	var out []scim.Client
	names, sums := map[string]bool{}, map[[32]byte]string{}
	for i, e := range c.Clients {
		cl, err := scim.ParseClient(e.Name, e.TokenSHA256)
		if err != nil {
			return nil, fmt.Errorf("scim.clients[%d]: %w", i, err)
		}
		if names[cl.Name] {
			return nil, fmt.Errorf("scim.clients[%d]: the name %q is given twice", i, cl.Name)
		}
		if other, dup := sums[cl.TokenSHA256]; dup {
			return nil, fmt.Errorf("scim.clients[%d]: %s has the token of %s: give each client its own (devid-ca scim-token)", i, cl.Name, other)
		}
		names[cl.Name], sums[cl.TokenSHA256] = true, cl.Name
		out = append(out, cl)
	}
	return out, nil
}

func (c *SCIMConfig) check() error {
	if _, err := c.clients(); err != nil {
		return err
	}
	if err := scim.CheckLoginFrom(c.LoginFrom); err != nil {
		return fmt.Errorf("scim.loginFrom: %w", err)
	}
	return nil
}
