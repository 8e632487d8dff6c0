package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/cmd/devid-ca/cacli"
	"github.com/devid-ssh/devid/internal/command"
)

// TestRestoreAsRoot: on a fresh machine (the CA directory, without db/,
// owned by the service user), `devid-ca restore` run as root from a
// backup only root can read (mode 0600) says what it did; run again, it
// says where it kept the store it replaced; and `devid-ca serve`, run as
// the CA directory's owner, serves the backup's devices.
func TestRestoreAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("not root: devid-ca restore as root is untested")
		}
		t.Skip("not root")
	}
	const uid, gid = 4321, 4322

	// The CA, with a device, backed up.
	ca := catest.Start(t, nil)
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddDevice(adminapi.NewDevice{Name: "web1", Kind: "host", Serial: "SN-1"}); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	backup := filepath.Join(base, "backup.db")
	ca.Backup(t, backup)
	ca.Stop()

	// The fresh machine: the CA directory without its store, the service
	// user's; the test binary where that user can run it.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "devid-ca")
	addr := freeAddrs(t, 1)[0]
	copyCADir(t, ca.Dir, dir, addr)
	err = filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "devid-ca.test")
	copyFile(t, os.Args[0], bin, 0o755)

	restore := func() string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		env := &command.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: os.Getenv}
		if code := cacli.Main([]string{"restore", "--from", backup, "--dir", dir}, env); code != 0 {
			t.Fatalf("devid-ca restore: exit %d\n%s%s", code, stdout.String(), stderr.String())
		}
		t.Logf("devid-ca restore:\n%s", stdout.String())
		return stdout.String()
	}
	store := filepath.Join(dir, "db", "devid.db")
	out := restore()
	for _, want := range []string{
		`(?m)^Restored ` + regexp.QuoteMeta(store+" from "+backup) + ` \([0-9]+ bytes: 1 devices, 0 users, [0-9]+ audit entries\)\.$`,
		`(?m)^It belongs to uid 4321, gid 4322, as ` + regexp.QuoteMeta(dir) + ` does`,
		`(?m)^KRL: the backup's version is [0-9]+; the next the CA publishes is [0-9]+ or later\.$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("devid-ca restore's output does not match %s", want)
		}
	}
	if strings.Contains(out, "kept") {
		t.Errorf("devid-ca restore on a fresh machine kept a store")
	}
	out = restore()
	if !regexp.MustCompile(`(?m)^The store it replaced is kept as ` + regexp.QuoteMeta(store) + `\.before-restore-[0-9TZ]+\.$`).MatchString(out) {
		t.Errorf("devid-ca restore over a store does not say where it kept it")
	}

	// devid-ca serve, as the service user.
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(dir, caserver.ConfigFile))
	cmd.Env = append(os.Environ(), mainEnv+"=1", "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	exited := startServe(t, cmd)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Roots}}, Timeout: time.Minute}
	deadline := time.Now().Add(2 * time.Minute) // bounds a hang only
	for {
		resp, err := hc.Get("https://" + addr + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("devid-ca serve, as uid %d, exited: %v", uid, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("devid-ca serve, as uid %d, does not answer: %v", uid, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rcl, err := adminapi.NewClient("https://"+addr, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := rcl.Devices(nil)
	if err != nil || len(devs) != 1 || devs[0].Name != "web1" {
		t.Errorf("the restored CA's devices: %+v %v", devs, err)
	}
	stopServe(t, cmd, exited)
}

// copyCADir copies the CA directory from to to (mode 0700), without its
// store, and sets the address it serves on.
func copyCADir(t *testing.T, from, to, addr string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		switch {
		case rel == "db":
			return filepath.SkipDir
		case d.IsDir():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			mode := fi.Mode().Perm()
			if rel == "." {
				mode = 0o700
			}
			return os.Mkdir(filepath.Join(to, rel), mode)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		copyFile(t, p, filepath.Join(to, rel), fi.Mode().Perm())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(to, caserver.ConfigFile)
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["address"] = addr
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
