// Command mkpackages builds devid's .deb and .rpm packages into a
// directory (make packages: -out dist). See package packaging/pkgbuild.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/devid-ssh/devid/packaging/pkgbuild"
)

func main() {
	out := flag.String("out", "dist", "directory for the packages")
	formats := flag.String("formats", "deb,rpm", "comma-separated formats: deb, rpm")
	pkgs := flag.String("packages", "", "comma-separated packages (default: devid, devid-ca, devid-host and devid-agent)")
	maintainer := flag.String("maintainer", pkgbuild.DefaultMaintainer, "the packages' Maintainer")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "mkpackages: no arguments, only flags")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := pkgbuild.Options{Out: *out, Formats: split(*formats), Packages: split(*pkgs), Maintainer: *maintainer, Log: os.Stderr}
	arts, err := pkgbuild.Build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkpackages:", err)
		os.Exit(1)
	}
	for _, a := range arts {
		st, err := os.Stat(a.Path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkpackages:", err)
			os.Exit(1)
		}
		fmt.Printf("%s\t%.1f MiB\n", a.Path, float64(st.Size())/(1<<20))
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
