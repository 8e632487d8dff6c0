package inventory_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// wantInvalid checks that err is an invalid-input error about field whose
// message contains msg.
func wantInvalid(t *testing.T, what string, err error, field, msg string) {
	t.Helper()
	var ie *inventory.Error
	if !errors.As(err, &ie) || !errors.Is(err, inventory.ErrInvalid) || ie.Field != field || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: err = %v, want invalid %s: …%s…", what, err, field, msg)
	}
}

// Invalid UTF-8 (or the U+FFFD a decoder put in its place) is refused, with
// the field and, in an import, the file and line; nothing is written.
func TestInvalidUTF8Refused(t *testing.T) {
	s, _ := newStore(t)
	for _, email := range []string{"a\xff@example.com", "a\ufffd@example.com"} {
		_, err := s.AddUser("root", inventory.NewUser{Email: email, Login: "a"})
		wantInvalid(t, fmt.Sprintf("email %q", email), err, "email", "not valid UTF-8")
	}
	_, err := s.AddUser("root", inventory.NewUser{Email: "a@example.com", Login: "a", Groups: []string{"sre\xff"}})
	wantInvalid(t, "group", err, "groups", "not valid UTF-8")
	pemA, _ := ek(t, 0)
	_, err = s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a\xff", Kind: "host"})
	wantInvalid(t, "device name", err, "name", "not valid UTF-8")
	_, err = s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a", Kind: "host", Owner: "b\xc3@example.com"})
	wantInvalid(t, "owner", err, "owner", "not valid UTF-8")

	mustUser(t, s, "a@example.com", "a")
	a, _ := ekB64(t, 0)
	b, _ := ekB64(t, 1)
	imports := []struct {
		name, data, field, where string
	}{
		{"users.csv", "email,login\na@example.com,a\nb\xff@example.com,b\n", "email", "users.csv:3: "},
		{"users.json", "[{\"email\": \"a@example.com\", \"login\": \"a\"},\n {\"email\": \"b\xff@example.com\", \"login\": \"b\"}]", "email", "users.json:2: "},
		{"users.json", "[{\"email\": \"b\\udc00@example.com\", \"login\": \"b\"}]", "email", "users.json:1: "},
		{"devices.csv", "ek,name,kind,owner\n" + a + ",a,host,\n" + b + ",b,host,a\xff@example.com\n", "owner", "devices.csv:3: "},
		{"devices.json", "[\n{\"ek\": \"" + a + "\", \"name\": \"a\", \"kind\": \"host\", \"collection\": \"w\xffb\"}]", "collection", "devices.json:2: "},
	}
	for _, c := range imports {
		var err error
		if strings.HasPrefix(c.name, "users") {
			_, err = s.ImportUsers("root", c.name, []byte(c.data), false)
		} else {
			_, err = s.ImportDevices("root", c.name, []byte(c.data), false)
		}
		wantInvalid(t, c.name, err, c.field, c.where+c.field+": not valid UTF-8")
	}
	if users, _ := s.Users(); len(users) != 1 {
		t.Errorf("%d users, want 1", len(users))
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Errorf("%d devices, want none", len(devs))
	}
}

// A reason is one line of at most MaxReasonLen bytes of text: no control
// characters (a newline would forge a line in devid audit), nothing that
// reorders the text on a terminal.
func TestReasonChecked(t *testing.T) {
	s, _ := newStore(t)
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a", Kind: "host"}); err != nil {
		t.Fatal(err)
	}
	audit, _ := s.Audit("")
	for _, reason := range []string{
		"lost\n2026-11-01T12:00:00Z  root  device.activate",
		"lost\r", "\x1b[2Klost", "lost\ttrain", "lost\x7f", "lost\u0085", "lost\u2028x", "\u202egol", "lost\xff",
		strings.Repeat("x", inventory.MaxReasonLen+1),
	} {
		_, err := s.SetStatus("root", "a", inventory.StatusQuarantined, reason)
		wantInvalid(t, fmt.Sprintf("reason %.20q", reason), err, "reason", "")
		err = s.RecordAudit("root", "cert.revoke", idA, reason, nil, nil)
		wantInvalid(t, fmt.Sprintf("RecordAudit reason %.20q", reason), err, "reason", "")
	}
	if d, _ := s.Device(idA); d.Status != inventory.StatusActive {
		t.Fatalf("a refused reason changed the status to %s", d.Status)
	}
	if audit2, _ := s.Audit(""); len(audit2) != len(audit) {
		t.Fatalf("refused reasons wrote %d audit entries", len(audit2)-len(audit))
	}
	long := strings.Repeat("é", inventory.MaxReasonLen/2)
	if _, err := s.SetStatus("root", "a", inventory.StatusQuarantined, long); err != nil {
		t.Fatalf("a reason of %d bytes: %v", len(long), err)
	}
	// The file name of an import ends up in the reason too.
	a, _ := ekB64(t, 1)
	_, err := s.ImportDevices("root", "x\ny.csv", []byte("ek,name,kind\n"+a+",b,host\n"), false)
	wantInvalid(t, "import file name", err, "file", "control character")
}
