// Command devid-demo runs devid end to end on this machine and tells what
// happens (make demo). See package demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/devid-ssh/devid/cmd/devid-demo/demo"
	"github.com/devid-ssh/devid/internal/buildinfo"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the devid binaries")
	dir := flag.String("dir", "", "working directory (default: a new temporary one, removed at the end)")
	keep := flag.Bool("keep", false, "keep the working directory")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		buildinfo.Print(os.Stdout, "devid-demo")
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Bin: *bin, Dir: *dir, Keep: *keep, Out: os.Stdout}); err != nil {
		fmt.Fprintf(os.Stderr, "devid-demo: %v\n", err)
		os.Exit(1)
	}
}
