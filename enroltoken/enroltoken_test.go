package enroltoken_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/enroltoken"
)

func TestNewParse(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := enroltoken.New()
		if err != nil {
			t.Fatal(err)
		}
		s := tok.Text()
		if len(s) != enroltoken.Len || !strings.HasPrefix(s, enroltoken.Prefix) || seen[s] {
			t.Fatalf("New: %d characters, or a repeat", len(s))
		}
		seen[s] = true
		back, err := enroltoken.Parse(s)
		if err != nil || back != tok || back.Hash() != tok.Hash() {
			t.Fatalf("Parse(New()) = %v", err)
		}
		if f, err := enroltoken.ParseFile([]byte("\n " + s + "\r\n")); err != nil || f != tok {
			t.Fatalf("ParseFile with white space around: %v", err)
		}
		// Neither String nor %v nor %#v shows the secret.
		for _, out := range []string{tok.String(), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
			if strings.Contains(out, s[len(enroltoken.Prefix):]) {
				t.Fatalf("the token is shown: %s", out)
			}
		}
		if !strings.Contains(tok.String(), tok.Hash().Short()) {
			t.Fatalf("String %q does not name the hash", tok.String())
		}
		if h, err := enroltoken.ParseHash(tok.Hash().String()); err != nil || h != tok.Hash() {
			t.Fatalf("ParseHash: %v", err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	tok, _ := enroltoken.New()
	s := tok.Text()
	body := s[len(enroltoken.Prefix):]
	flip := func(i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, c := range []struct{ in, want string }{
		{"", "does not start with"},
		{"devid-enroll-" + body, "does not start with"},
		{"DEVID-ENROL-" + body, "does not start with"},
		{s[:len(s)-1], "69 characters, want 70"},
		{s + "a", "71 characters, want 70"},
		{" " + s, "does not start with"},
		{s[:len(s)-1] + " ", "character 70 is not one of a-z and 2-7"},
		{enroltoken.Prefix + "A" + body[1:], "character 13 is not"},
		{enroltoken.Prefix + "=" + body[1:], "character 13 is not one of"},
		{s[:20] + "1" + s[21:], "character 21 is not"},
		{flip(20), "its check does not match"},
		{flip(len(s) - 3), "its check does not match"},
	} {
		_, err := enroltoken.Parse(c.in)
		if !errors.Is(err, enroltoken.ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want %q", c.in, err, c.want)
		}
	}
	// The 2 bits after the last byte must be zero: only one text per token.
	last := s[len(s)-1]
	alt := strings.IndexByte("abcdefghijklmnopqrstuvwxyz234567", last) ^ 1
	other := s[:len(s)-1] + string("abcdefghijklmnopqrstuvwxyz234567"[alt])
	if _, err := enroltoken.Parse(other); !errors.Is(err, enroltoken.ErrMalformed) {
		t.Errorf("a second encoding of the token was accepted")
	}
	if _, err := enroltoken.ParseFile([]byte(s + "\n" + s)); err == nil {
		t.Error("a file with two tokens was accepted")
	}
}

// knownErrors are Parse's messages, numbers replaced by N.
var knownErrors = map[string]bool{
	`enroltoken: malformed token: it does not start with "devid-enrol-"`:                                         true,
	`enroltoken: malformed token: N characters, want N ("devid-enrol-" and N more)`:                              true,
	`enroltoken: malformed token: character N is not one of a-z and N-N`:                                         true,
	`enroltoken: malformed token: not the encoding of a token (its last character is wrong)`:                     true,
	`enroltoken: malformed token: its check does not match: a character was changed, or it was not copied whole`: true,
}

var digits = regexp.MustCompile(`[0-9]+`)

// FuzzParse: Parse never panics; what it accepts is the canonical text of
// a token (parsing it again gives the same), with the check right; its
// errors never quote what they were given.
func FuzzParse(f *testing.F) {
	tok, _ := enroltoken.New()
	for _, s := range []string{tok.Text(), "", enroltoken.Prefix, tok.Text() + "\n", strings.ToUpper(tok.Text())} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := enroltoken.Parse(s)
		if err != nil {
			if !errors.Is(err, enroltoken.ErrMalformed) || !got.IsZero() {
				t.Fatalf("error %v (token %v)", err, got)
			}
			if msg := digits.ReplaceAllString(err.Error(), "N"); !knownErrors[msg] {
				t.Fatalf("error %q is none of the known messages: does it quote the input?", msg)
			}
			return
		}
		if got.Text() != s || len(s) != enroltoken.Len {
			t.Fatalf("accepted %q as %q", s, got.Text())
		}
		again, err := enroltoken.Parse(got.Text())
		if err != nil || again != got {
			t.Fatalf("the text of an accepted token does not parse back: %v", err)
		}
	})
}

// TestReadFile: a token file is read whole, white space around the token
// allowed; one that others may read is refused, saying how to fix it, and
// a missing one matches fs.ErrNotExist.
func TestReadFile(t *testing.T) {
	tok, err := enroltoken.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	if err := os.WriteFile(f, []byte(tok.Text()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := enroltoken.ReadFile(f); err != nil || got.Hash() != tok.Hash() {
		t.Fatalf("ReadFile(0600): %v, %v", got, err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = enroltoken.ReadFile(f)
	if err == nil || !strings.Contains(err.Error(), "mode 0644") || !strings.Contains(err.Error(), "chmod 600 "+f) || strings.Contains(err.Error(), tok.Text()) {
		t.Fatalf("ReadFile(0644): %v", err)
	}
	if _, err := enroltoken.ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadFile(missing): %v", err)
	}
}
