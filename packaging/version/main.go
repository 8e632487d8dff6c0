// Command version prints devid's version from git (package
// packaging/pkgversion): `go run ./packaging/version` the version,
// `-ldflags` the linker flags that set it in the binaries, as
// `make build` passes them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/devid-ssh/devid/packaging/pkgversion"
)

func main() {
	ldflags := flag.Bool("ldflags", false, "print the linker flags that set the version (for go build -ldflags)")
	dir := flag.String("C", ".", "the checkout")
	flag.Parse()
	v, err := pkgversion.FromGit(context.Background(), *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "version:", err)
		os.Exit(1)
	}
	if !*ldflags {
		fmt.Println(v.Version)
		return
	}
	f, err := pkgversion.LDFlags(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "version:", err)
		os.Exit(1)
	}
	fmt.Println(f)
}
