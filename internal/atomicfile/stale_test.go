package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRemoveStale: the temporary files an interrupted WriteFile leaves are
// named so that they are recognisably ours, and RemoveStale removes those
// and nothing else.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	// What a write killed between CreateTemp and rename leaves behind.
	f, err := createTemp(filepath.Join(dir, "user_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ours := filepath.Base(f.Name())
	if !IsTemp(ours) {
		t.Fatalf("%s, a temporary file of WriteFile, is not recognised as one", ours)
	}
	if err := WriteFile(filepath.Join(dir, "user_ca.pub"), []byte("keys"), 0o644); err != nil {
		t.Fatal(err)
	}
	legacy := ".revoked.krl.tmp-123456" // the naming before: still ours for managed names
	theirs := []string{
		".user_ca.pub.swp", "user_ca.pub.tmp-1", ".other.tmp-42", ".x.devid-tmp-", ".x.devid-tmp-12a",
		"x.devid-tmp-12", ".devid-tmp-12", ".revoked.krl.tmp-", ".revoked.krl.tmp-1x",
	}
	for _, n := range append([]string{legacy}, theirs...) {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
	}
	// A directory with our naming is not a file we left.
	os.Mkdir(filepath.Join(dir, ".d.devid-tmp-7"), 0o700)
	removed, err := RemoveStale(dir, "revoked.krl", "user_ca.pub")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{filepath.Join(dir, legacy), filepath.Join(dir, ours)}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	for _, n := range append(theirs, "user_ca.pub", ".d.devid-tmp-7") {
		if !slices.Contains(left, n) {
			t.Errorf("%s was removed: not ours", n)
		}
	}
	for _, n := range left {
		if n == ours || n == legacy {
			t.Errorf("%s left in place", n)
		}
	}
	if strings.Contains(ours, ".tmp-") && !strings.Contains(ours, "devid") {
		t.Errorf("temporary name %s is not distinctive", ours)
	}
	if _, err := RemoveStale(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("a missing directory: %v", err)
	}
}
