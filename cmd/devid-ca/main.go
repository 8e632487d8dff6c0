// Command devid-ca is devid's CA service. See package cacli.
package main

import (
	"os"

	"github.com/devid-ssh/devid/internal/command"

	"github.com/devid-ssh/devid/cmd/devid-ca/cacli"
)

func main() { os.Exit(cacli.Main(os.Args[1:], command.OSEnv())) }
