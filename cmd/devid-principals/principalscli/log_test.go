package principalscli

import (
	"bytes"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// TestSyslog: a line goes to the syslog socket as journald and syslog
// daemons read it, with facility authpriv and the tag devid-principals.
func TestSyslog(t *testing.T) {
	for _, network := range []string{"unixgram", "unix"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			var read func() string
			if network == "unixgram" {
				c, err := net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				read = func() string {
					b := make([]byte, 4096)
					n, _, err := c.ReadFrom(b)
					if err != nil {
						t.Fatal(err)
					}
					return string(b[:n])
				}
			} else {
				ln, err := net.Listen(network, path)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				read = func() string {
					c, err := ln.Accept()
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					b := make([]byte, 4096)
					n, _ := c.Read(b)
					return string(b[:n])
				}
			}
			var fallback bytes.Buffer
			l := &logger{fallback: &fallback}
			l.fd, l.stream = dialSyslog(path)
			if l.fd < 0 || l.stream != (network == "unix") {
				t.Fatalf("dialSyslog: fd %d, stream %v", l.fd, l.stream)
			}
			l.write(sevInfo, "allow", "account", "alice", "rule", "* login:{account}")
			l.close()
			got := read()
			want := `^<86>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d devid-principals\[` + strconv.Itoa(syscall.Getpid()) +
				`\]: msg=allow account=alice rule="\* login:\{account\}"` + map[bool]string{true: `\n`}[network == "unix"] + `$`
			if !regexp.MustCompile(want).MatchString(got) {
				t.Errorf("syslog got %q, want %s", got, want)
			}
			if fallback.Len() != 0 {
				t.Errorf("fallback written: %q", fallback.String())
			}
		})
	}
}

// TestLogFallback: without a syslog socket, or when it does not take the
// line, the line goes to the fallback.
func TestLogFallback(t *testing.T) {
	var fallback bytes.Buffer
	l := &logger{fallback: &fallback}
	l.fd, l.stream = dialSyslog(filepath.Join(t.TempDir(), "none"))
	if l.fd != -1 {
		t.Fatalf("fd %d", l.fd)
	}
	l.write(sevErr, "deny", "reason", "x")
	if got := fallback.String(); got != "devid-principals: level=error msg=deny reason=x\n" {
		t.Errorf("fallback %q", got)
	}
	if openLog("stderr", nil) != nil {
		t.Error("openLog with neither syslog nor a fallback returned a logger")
	}
}

func TestAppendRecord(t *testing.T) {
	got := string(appendRecord(nil, "deny", "account", "alice", "empty", "", "id", "urn:ek:sha256:a+b/c=", "reason", "line\nbreak \"quoted\" \\", "utf8", "jürgen"))
	want := `msg=deny account=alice empty="" id=urn:ek:sha256:a+b/c= reason="line\x0abreak \"quoted\" \\" utf8="j\xc3\xbcrgen"`
	if got != want {
		t.Errorf("appendRecord:\n%s\nwant:\n%s", got, want)
	}
}
