package sshdrun

import (
	"fmt"
	"os"
	"path/filepath"
)

// libexec is where InstallCommand installs programs.
const libexec = "/usr/local/libexec"

// InstallCommand installs a copy of the program bin where sshd agrees to run
// it as an AuthorizedPrincipalsCommand: in a new directory under
// /usr/local/libexec named prefix and random characters, mode 0755 and
// root-owned like every directory above it. sshd refuses a command in /tmp,
// or one reached through a directory that anyone but root may write,
// following symbolic links, so a test's own directory will not do. It
// returns the copy's path; remove deletes the new directory with whatever
// the caller put beside the copy (a policy the command reads: its user,
// nobody, cannot enter a test's directories). Needs root.
func InstallCommand(bin, prefix string) (path string, remove func(), err error) {
	if err := os.MkdirAll(libexec, 0o755); err != nil {
		return "", nil, fmt.Errorf("sshdrun: %w", err)
	}
	dir, err := os.MkdirTemp(libexec, prefix)
	if err != nil {
		return "", nil, fmt.Errorf("sshdrun: %w", err)
	}
	remove = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, filepath.Base(bin))
	if err := install(bin, path); err != nil {
		remove()
		return "", nil, fmt.Errorf("sshdrun: installing %s as %s: %w", bin, path, err)
	}
	return path, remove, nil
}

// install copies bin to path, and makes both it and its directory 0755
// whatever the umask.
func install(bin, path string) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(path, 0o755); err != nil {
		return err
	}
	return os.Chmod(filepath.Dir(path), 0o755)
}
