package enroll_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/enroltoken"
)

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	src := enroll.TokenFile(file, "host", "web-1")
	if e, err := src(); e != nil || err != nil {
		t.Fatalf("missing file: %+v, %v; want no token", e, err)
	}
	tok, _ := enroltoken.New()
	os.WriteFile(file, []byte(tok.Text()+"\n"), 0o600)
	e, err := src()
	if err != nil || e.Token != tok.Text() || e.Kind != "host" || e.Name != "web-1" {
		t.Fatalf("token file: %+v, %v", e, err)
	}
	os.WriteFile(file, []byte(tok.Text()[:30]+"\n"), 0o600)
	if e, err := src(); e != nil || err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "malformed token") || strings.Contains(err.Error(), tok.Text()[:30]) {
		t.Fatalf("a malformed token file: %+v, %v", e, err)
	}
	os.Remove(file)
	os.Mkdir(file, 0o700)
	if _, err := src(); err == nil {
		t.Fatal("a directory as the token file: no error")
	}
}
