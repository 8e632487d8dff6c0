// Package atomicfile replaces files whole: a reader sees either the old
// content or the new, never a missing or half-written file, and the new
// content survives a crash once WriteFile returns.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tempInfix names WriteFile's temporary files: ".NAME.devid-tmp-DIGITS" in
// NAME's directory, DIGITS from os.CreateTemp. Distinctive, so that
// RemoveStale can tell them from anybody else's files.
const tempInfix = ".devid-tmp-"

// legacyInfix is the naming of earlier releases: ".NAME.tmp-DIGITS".
const legacyInfix = ".tmp-"

func createTemp(name string) (*os.File, error) {
	return os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+tempInfix+"*")
}

// IsTemp reports whether base (a file name without directory) is one of
// WriteFile's temporary files.
func IsTemp(base string) bool {
	return hasTempSuffix(base, tempInfix)
}

// hasTempSuffix reports whether base is ".NAME" + infix + DIGITS with NAME
// not empty.
func hasTempSuffix(base, infix string) bool {
	i := strings.LastIndex(base, infix)
	return i >= 2 && base[0] == '.' && allDigits(base[i+len(infix):])
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// RemoveStale removes from dir the temporary files an interrupted WriteFile
// left (a crash between creating and renaming one), and, for each of
// legacyNames, the temporary files of earlier releases for that name
// (".NAME.tmp-DIGITS"). Only regular files with exactly that naming are
// removed. Call it only while no WriteFile into dir can be running. It
// returns the paths it removed; a missing dir is not an error.
func RemoveStale(dir string, legacyNames ...string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		n := e.Name()
		ours := IsTemp(n)
		for _, l := range legacyNames {
			if rest, ok := strings.CutPrefix(n, "."+l+legacyInfix); ok && allDigits(rest) {
				ours = true
			}
		}
		if !ours || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, n)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("atomicfile: remove stale %w", err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// WriteFile writes data to a temporary file in name's directory, fsyncs it,
// sets perm, renames it over name and fsyncs the directory.
func WriteFile(name string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(name)
	f, err := createTemp(name)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("atomicfile: write %s: %w", name, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, name); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
