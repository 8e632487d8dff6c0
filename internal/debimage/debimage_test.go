package debimage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRef: the tag is REPOSITORY:SUITE-HASH12, the same whatever the
// packages' order or duplicates, and another for any other input.
func TestRef(t *testing.T) {
	s := Default("bookworm")
	ref := s.Ref()
	if !regexp.MustCompile(`^devid-debian:bookworm-[0-9a-f]{12}$`).MatchString(ref) {
		t.Fatalf("Ref() = %q", ref)
	}
	shuffled := s
	shuffled.Packages = append([]string{"procps"}, s.Packages...)
	for i, j := 0, len(shuffled.Packages)-1; i < j; i, j = i+1, j-1 {
		shuffled.Packages[i], shuffled.Packages[j] = shuffled.Packages[j], shuffled.Packages[i]
	}
	if got := shuffled.Ref(); got != ref {
		t.Errorf("reordered packages with a duplicate: %s, want %s", got, ref)
	}
	explicit := s
	explicit.Mirror = DefaultMirror + "/"
	if got := explicit.Ref(); got != ref {
		t.Errorf("the default mirror spelt out: %s, want %s", got, ref)
	}
	others := map[string]Spec{
		"suite":    Default("trixie"),
		"packages": {Suite: "bookworm", Packages: append(DefaultPackages(), "curl")},
		"mirror":   {Suite: "bookworm", Packages: DefaultPackages(), Mirror: "https://snapshot.debian.org/archive/debian/20250520T000000Z"},
	}
	for what, o := range others {
		if strings.TrimPrefix(o.Ref(), "devid-debian:"+o.Suite+"-") == strings.TrimPrefix(ref, "devid-debian:bookworm-") {
			t.Errorf("another %s, same hash: %s", what, o.Ref())
		}
	}
	if got := (Spec{Suite: "trixie", Packages: []string{"bash"}, Repository: "x/y"}).Ref(); !strings.HasPrefix(got, "x/y:trixie-") {
		t.Errorf("Repository x/y: Ref() = %s", got)
	}
}

// TestValidate: what could reach debootstrap's command line as an option,
// or docker's as another reference, is refused, naming it.
func TestValidate(t *testing.T) {
	good := Default("trixie")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Spec{
		"suite option":   {Suite: "--foreign", Packages: []string{"bash"}},
		"empty suite":    {Packages: []string{"bash"}},
		"no packages":    {Suite: "trixie"},
		"package option": {Suite: "trixie", Packages: []string{"--exclude=x"}},
		"package comma":  {Suite: "trixie", Packages: []string{"bash,curl"}},
		"mirror scheme":  {Suite: "trixie", Packages: []string{"bash"}, Mirror: "file:///srv/debian"},
		"mirror no host": {Suite: "trixie", Packages: []string{"bash"}, Mirror: "http:///debian"},
		"repository":     {Suite: "trixie", Packages: []string{"bash"}, Repository: "Devid:latest"},
	} {
		err := s.Validate()
		if err == nil {
			t.Errorf("%s: %+v accepted", name, s)
			continue
		}
		if !strings.HasPrefix(err.Error(), "debimage: ") {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := (&Builder{build: func(context.Context, Spec, string) error { panic("built") }}).Ensure(context.Background(), s); err == nil {
			t.Errorf("%s: Ensure accepted %+v", name, s)
		}
	}
}

// TestEnsureOnce: Builders racing for one image build it once (the
// others wait on the lock and then find it), and a present image is not
// built at all.
func TestEnsureOnce(t *testing.T) {
	var built atomic.Int32
	var mu sync.Mutex
	have := map[string]bool{}
	// The build goes on once the three others have found no image: they
	// are then bound for the lock the build holds.
	checks, othersChecked := 0, make(chan struct{})
	exists := func(_ context.Context, ref string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if checks++; checks == 5 { // 4 first checks, and the builder's second
			close(othersChecked)
		}
		return have[ref], nil
	}
	build := func(_ context.Context, s Spec, ref string) error {
		built.Add(1)
		select {
		case <-othersChecked:
		case <-time.After(time.Minute):
			return errors.New("the other Ensure calls never checked for the image")
		}
		mu.Lock()
		defer mu.Unlock()
		have[ref] = true
		return nil
	}
	lockDir := t.TempDir()
	s := Default("trixie")
	var wg sync.WaitGroup
	refs := make([]string, 4)
	errs := make([]error, 4)
	for i := range refs {
		// Separate Builders, as separate test binaries would have.
		b := &Builder{LockDir: lockDir, exists: exists, build: build}
		wg.Go(func() { refs[i], errs[i] = b.Ensure(context.Background(), s) })
	}
	wg.Wait()
	for i := range refs {
		if errs[i] != nil || refs[i] != s.Ref() {
			t.Errorf("Ensure %d: %q, %v", i, refs[i], errs[i])
		}
	}
	if n := built.Load(); n != 1 {
		t.Errorf("built %d times, want 1", n)
	}
	if _, err := (&Builder{LockDir: lockDir, exists: exists, build: build}).Ensure(context.Background(), s); err != nil || built.Load() != 1 {
		t.Errorf("a present image: %v, built %d times in all", err, built.Load())
	}
}

// TestEnsureErrors: a failed build or engine is the error, and no ref;
// a wait for another build's lock ends with the context.
func TestEnsureErrors(t *testing.T) {
	lockDir := t.TempDir()
	s := Default("bookworm")
	no := func(context.Context, string) (bool, error) { return false, nil }
	boom := errors.New("boom")
	if ref, err := (&Builder{LockDir: lockDir, exists: no, build: func(context.Context, Spec, string) error { return boom }}).Ensure(context.Background(), s); !errors.Is(err, boom) || ref != "" {
		t.Errorf("failed build: %q, %v", ref, err)
	}
	down := errors.New("engine down")
	if _, err := (&Builder{LockDir: lockDir, exists: func(context.Context, string) (bool, error) { return false, down }}).Ensure(context.Background(), s); !errors.Is(err, down) {
		t.Errorf("engine down: %v", err)
	}
	unlock, err := lock(context.Background(), filepath.Join(lockDir, "devid-debimage-"+s.Hash()[:12]+".lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Builder{LockDir: lockDir, exists: no, build: func(context.Context, Spec, string) error { panic("built without the lock") }}).Ensure(ctx, s); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "lock") {
		t.Errorf("lock held elsewhere, context cancelled: %v", err)
	}
}

// TestTrim: on a root laid out as debootstrap leaves it, trim removes
// documentation (but copyright files), manual pages, translations (but
// locale.alias), apt's lists and downloads, SSH host keys, hostname and
// resolv.conf; empties machine-id; adds the dpkg excludes and the host
// key unit, wanted by ssh.service; and keeps everything else.
func TestTrim(t *testing.T) {
	root := t.TempDir()
	files := map[string]bool{ // path: kept
		"usr/share/doc/openssh-server/copyright":        true,
		"usr/share/doc/openssh-server/changelog.gz":     false,
		"usr/share/man/man8/sshd.8.gz":                  false,
		"usr/share/locale/locale.alias":                 true,
		"usr/share/locale/de/LC_MESSAGES/dpkg.mo":       false,
		"var/cache/apt/archives/openssh_1_amd64.deb":    false,
		"var/cache/apt/archives/partial/x":              true,
		"var/lib/apt/lists/deb.debian.org_InRelease":    false,
		"etc/ssh/ssh_host_ed25519_key":                  false,
		"etc/ssh/ssh_host_ed25519_key.pub":              false,
		"etc/ssh/sshd_config":                           true,
		"etc/hostname":                                  false,
		"etc/resolv.conf":                               false,
		"usr/sbin/sshd":                                 true,
		"etc/systemd/system/multi-user.target.wants/x":  true,
		"etc/dpkg/dpkg.cfg.d/excludes-of-someone-else":  true,
		"usr/share/info/dir":                            false,
		"var/log/dpkg.log":                              false,
		"etc/machine-id":                                true,
		"var/lib/apt/lists/partial/.keep-this-dir-only": true,
	}
	for p := range files {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := trim(root); err != nil {
		t.Fatal(err)
	}
	for p, kept := range files {
		_, err := os.Stat(filepath.Join(root, p))
		if got := err == nil; got != kept {
			t.Errorf("%s: kept %v, want %v", p, got, kept)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/machine-id")); err != nil || len(b) != 0 {
		t.Errorf("machine-id: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/devid-debimage-excludes")); err != nil || !strings.Contains(string(b), "path-exclude /usr/share/man/*") {
		t.Errorf("dpkg excludes: %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/systemd/system/ssh.service.wants/ssh-hostkeys.service")); err != nil || target != "/etc/systemd/system/ssh-hostkeys.service" {
		t.Errorf("ssh.service.wants/ssh-hostkeys.service: %q, %v", target, err)
	}
}

// TestRemoveRoot: only a directory with nothing mounted under it is
// removed; a mount point is read from mountinfo's escaped form.
func TestRemoveRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "root", "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeRoot(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	for in, want := range map[string]string{
		`/tmp/a\040b/root/proc`: "/tmp/a b/root/proc",
		`/plain`:                "/plain",
		`/x\134y`:               `/x\y`,
		`/trailing\04`:          `/trailing\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
