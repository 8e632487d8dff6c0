package fleetsim

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rxConn is a TCP connection that keeps the kernel's receive time of the
// data it last read (SO_TIMESTAMPNS): when the CA's answer reached the
// host's socket, whenever the bench's process gets round to reading it.
// With 10,000 simulated hosts on the CPUs the CAs use, the reading can
// come seconds after the answer was there.
type rxConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	oob  [128]byte     // reads on a connection are sequential (net/http's read loop)
	last *atomic.Int64 // Unix nanoseconds of the newest data read; 0: unknown
}

// dialRX returns a DialContext for a host's KRL transport whose
// connections store their receive times in last.
func dialRX(last *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("fleetsim: %s connection is a %T, not TCP", network, c)
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			c.Close()
			return nil, err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		}); err != nil || serr != nil {
			c.Close()
			return nil, fmt.Errorf("fleetsim: SO_TIMESTAMPNS: %v %v", err, serr)
		}
		return &rxConn{TCPConn: tc, raw: raw, last: last}, nil
	}
}

func (c *rxConn) Read(p []byte) (int, error) {
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, c.oob[:], 0)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	// No timestamp (the kernel turns receive timestamps on for the
	// whole system a moment after the first socket asks): unknown, and
	// the reader takes the time it read the data, which is later.
	t, _ := rxTime(c.oob[:oobn])
	c.last.Store(t)
	return n, nil
}

// rxTime is the SCM_TIMESTAMPNS in a recvmsg's control data, in Unix
// nanoseconds.
func rxTime(oob []byte) (int64, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return sec*1e9 + nsec, true
		}
	}
	return 0, false
}
