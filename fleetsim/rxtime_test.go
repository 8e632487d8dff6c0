package fleetsim

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestRXConnTimestamps: the kernel's receive time of data read through
// an rxConn is kept, and it is when the data arrived, not when it was
// read.
func TestRXConnTimestamps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var last atomic.Int64
	c, err := dialRX(&last)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()

	buf := make([]byte, 6)
	// The kernel turns receive timestamps on for the system shortly
	// after the first socket asks: until then a read has none, and
	// says so (0), rather than keep an older one.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := srv.Write([]byte("hello!")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if last.Load() != 0 {
			break
		}
		if time.Now().After(deadline) { // bounds a hang only
			t.Fatal("no receive timestamp after 30 s of reads")
		}
		time.Sleep(10 * time.Millisecond) // a poll interval
	}

	before := time.Now()
	if _, err := srv.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	// Read only once the data has been waiting a while: the receive
	// time must be before the read, not at it. (Nothing is asserted of
	// how long this takes; a loaded machine only makes the wait longer.)
	time.Sleep(50 * time.Millisecond)
	readAt := time.Now()
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "answer" {
		t.Fatalf("read %q", buf)
	}
	rx := time.Unix(0, last.Load())
	if last.Load() == 0 || rx.Before(before.Add(-time.Second)) || !rx.Before(readAt) {
		t.Errorf("receive time %v: want after the write (%v) and before the read (%v)", rx, before, readAt)
	}
	srv.Close()
	if _, err := c.Read(buf); err != io.EOF {
		t.Errorf("read after the peer closed: %v, want EOF", err)
	}
}
