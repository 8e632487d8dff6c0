// Command devid-hostd keeps a host's sshd right. See package hostd.
package main

import (
	"os"

	"github.com/devid-ssh/devid/internal/cliutil"
	"github.com/devid-ssh/devid/internal/hostdcli"
)

func main() { os.Exit(hostdcli.Main(os.Args[1:], cliutil.OSEnv())) }
