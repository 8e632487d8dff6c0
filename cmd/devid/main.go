// Command devid is the devid operator CLI. See package devidcli.
package main

import (
	"os"

	"github.com/devid-ssh/devid/internal/command"

	"github.com/devid-ssh/devid/cmd/devid/devidcli"
)

func main() { os.Exit(devidcli.Main(os.Args[1:], command.OSEnv())) }
