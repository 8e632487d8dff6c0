// Command devid is the devid operator CLI. See package devidcli.
package main

import (
	"github.com/devid-ssh/devid/internal/cliutil"
	"os"

	"github.com/devid-ssh/devid/internal/devidcli"
)

func main() { os.Exit(devidcli.Main(os.Args[1:], cliutil.OSEnv())) }
