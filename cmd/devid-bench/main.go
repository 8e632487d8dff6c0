// Command devid-bench measures a simulated fleet against devid-ca replicas
// and a stock step-ca. See package fleetsim, and `devid-bench --help`.
package main

import (
	"os"

	"github.com/devid-ssh/devid/fleetsim"
)

func main() { os.Exit(fleetsim.Main(os.Args[1:], os.Stdout, os.Stderr)) }
