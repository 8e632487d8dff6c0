// Command devid-ca is devid's CA service. See package cacli.
package main

import (
	"github.com/devid-ssh/devid/internal/cliutil"
	"os"

	"github.com/devid-ssh/devid/internal/cacli"
)

func main() { os.Exit(cacli.Main(os.Args[1:], cliutil.OSEnv())) }
