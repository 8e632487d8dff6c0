// Command devid is the devid operator CLI. See package devidcli.
package main

import (
	"os"

	"github.com/devid-ssh/devid/internal/devidcli"
)

func main() { os.Exit(devidcli.Main(os.Args[1:], devidcli.Env())) }
