// Command devid-images builds devid's Debian container images (make
// images) unless the engine has them, and prints their references. See
// package debimage.
//
//	devid-images [--suite bookworm,trixie] [--mirror URL] [--alias=true] [-v] [--packages DIR]
//
// Each image is tagged REPOSITORY:SUITE-HASH and, with --alias (the
// default), REPOSITORY:SUITE too: the name contrib/compose builds on.
// With --packages DIR it also stages devid's .deb packages, built from
// this checkout, in DIR (replacing what was there; see package containerpkgs):
// make compose puts them in contrib/compose/packages.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/devid-ssh/devid/internal/debimage"
	"github.com/devid-ssh/devid/packaging/containerpkgs"
)

func main() {
	suites := flag.String("suite", strings.Join(debimage.Suites(), ","), "comma-separated Debian suites")
	mirror := flag.String("mirror", "", "Debian mirror (default "+debimage.DefaultMirror+"; a snapshot.debian.org URL pins a date)")
	alias := flag.Bool("alias", true, "also tag each image REPOSITORY:SUITE")
	verbose := flag.Bool("v", false, "show debootstrap's output")
	packages := flag.String("packages", "", "also stage devid's packages in this directory (for contrib/compose)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "devid-images: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &debimage.Builder{Log: os.Stderr}
	if *verbose {
		b.Output = &lockedWriter{w: os.Stderr}
	}
	list := strings.Split(*suites, ",")
	errs := make([]error, len(list))
	refs := make([]string, len(list))
	var wg sync.WaitGroup
	for i, suite := range list {
		s := debimage.Default(suite)
		s.Mirror = *mirror
		wg.Go(func() { refs[i], errs[i] = b.Ensure(ctx, s) })
	}
	var stageErr error
	if *packages != "" {
		wg.Go(func() { stageErr = stage(ctx, *packages) })
	}
	wg.Wait()
	code := 0
	if stageErr != nil {
		fmt.Fprintf(os.Stderr, "devid-images: %v\n", stageErr)
		code = 1
	}
	for i, suite := range list {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "devid-images: %v\n", errs[i])
			code = 1
			continue
		}
		line := refs[i]
		if *alias {
			name := debimage.DefaultRepository + ":" + suite
			if out, err := exec.CommandContext(ctx, "docker", "tag", refs[i], name).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "devid-images: docker tag %s %s: %v: %s\n", refs[i], name, err, out)
				code = 1
				continue
			}
			line += " " + name
		}
		fmt.Println(line)
	}
	os.Exit(code)
}

// stage puts devid's packages in dir, replacing what was there.
func stage(ctx context.Context, dir string) error {
	root, err := containerpkgs.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), ".packages-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "packages")
	if err := containerpkgs.Stage(ctx, root, out, nil); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(out, dir); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "devid-images: devid's packages are in %s\n", dir)
	return nil
}

// lockedWriter serialises the two builds' output.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
