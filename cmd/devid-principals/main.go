// Command devid-principals is sshd's AuthorizedPrincipalsCommand: it prints
// the certificate's device-ID principal when the local policy lets the
// certificate log in to the account, nothing otherwise. See package
// principals for the policy and the decision, and package principalscli
// (beside this file) for the command line.
package main

import (
	"os"

	"github.com/devid-ssh/devid/cmd/devid-principals/principalscli"
	"github.com/devid-ssh/devid/internal/command"
)

func main() { os.Exit(principalscli.Main(os.Args[1:], command.OSEnv())) }
