// Package sdnotifytest plays systemd's side of sd_notify(3) for tests: a
// datagram socket to name in NOTIFY_SOCKET, and the messages a daemon
// sends to it.
package sdnotifytest

import (
	"net"
	"path/filepath"
	"testing"
)

// Listen makes a unixgram socket in a temporary directory of t's, to name
// in NOTIFY_SOCKET, and returns its path and the messages it receives, one
// a datagram, in order. The socket closes when the test ends, and then the
// channel. Up to 1000 messages wait unread; past those, the socket's own
// buffer.
func Listen(t testing.TB) (path string, msgs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 1000)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}
