// Command devid-hostd keeps a host's sshd right. See package hostd.
package main

import (
	"os"

	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/cmd/devid-hostd/hostdcli"
)

func main() { os.Exit(hostdcli.Main(os.Args[1:], command.OSEnv())) }
