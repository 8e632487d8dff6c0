// Command devid-hostd keeps a host's sshd right. See package hostd.
package main

import (
	"os"

	"github.com/devid-ssh/devid/cmd/devid-hostd/hostdcli"
	"github.com/devid-ssh/devid/internal/command"
)

func main() { os.Exit(hostdcli.Main(os.Args[1:], command.OSEnv())) }
