// Command devid-agent keeps a user's TPM-resident SSH key and certificate
// and serves them to ssh as an agent. See package agentd.
package main

import (
	"os"

	"github.com/devid-ssh/devid/cmd/devid-agent/agentcli"
	"github.com/devid-ssh/devid/internal/command"
)

func main() { os.Exit(agentcli.Main(os.Args[1:], command.OSEnv())) }
