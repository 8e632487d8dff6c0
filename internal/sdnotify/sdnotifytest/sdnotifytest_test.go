package sdnotifytest

import (
	"net"
	"testing"
	"time"
)

// TestListen: each datagram sent to the socket is one message, in order;
// the channel closes once the test that listened ends.
func TestListen(t *testing.T) {
	var msgs <-chan string
	t.Run("listen", func(t *testing.T) {
		var path string
		path, msgs = Listen(t)
		conn, err := net.Dial("unixgram", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, m := range []string{"STATUS=starting", "READY=1\nSTATUS=serving"} {
			if _, err := conn.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-msgs:
				if got != m {
					t.Errorf("got %q, want %q", got, m)
				}
			case <-time.After(time.Minute): // bounds a hang only
				t.Fatalf("no %q within a minute", m)
			}
		}
	})
	select {
	case m, ok := <-msgs:
		if ok {
			t.Errorf("after the test: %q, want the channel closed", m)
		}
	case <-time.After(time.Minute): // bounds a hang only
		t.Fatal("the channel is still open a minute after the test")
	}
}
