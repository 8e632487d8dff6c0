package tpm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/tpm"
)

// response builds a TPM response of n bytes in all with a correct header.
func response(n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:2], 0x8001) // TPM_ST_NO_SESSIONS
	binary.BigEndian.PutUint32(b[2:6], uint32(n))
	for i := 10; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

// fakeTPM answers each command read from conn with the next of resps,
// written in pieces of at most chunk bytes, and closes conn after the last.
func fakeTPM(t *testing.T, conn net.Conn, chunk int, resps ...[]byte) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		defer conn.Close()
		cmd := make([]byte, 4096)
		for _, r := range resps {
			if _, err := conn.Read(cmd); err != nil {
				return
			}
			for len(r) > 0 {
				n := min(chunk, len(r))
				if _, err := conn.Write(r[:n]); err != nil {
					return
				}
				r = r[n:]
			}
		}
	}()
}

// TestChannelWholeResponses: responses written one byte at a time (a
// 4000-byte one, as large as go-tpm's read buffer allows, and a bare header)
// each come back whole from one Read, and from Send.
func TestChannelWholeResponses(t *testing.T) {
	client, server := net.Pipe()
	big, small := response(4000), response(10)
	fakeTPM(t, server, 1, big, small, big)
	ch := tpm.NewChannel(client)
	defer ch.Close()

	for _, want := range [][]byte{big, small} {
		if _, err := ch.Write([]byte("command")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := ch.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("Read returned %d bytes, want the whole %d-byte response", n, len(want))
		}
	}
	got, err := ch.Send([]byte("command"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("Send returned %d bytes, want the whole %d-byte response", len(got), len(big))
	}
}

// TestChannelSmallReadBuffer: a response larger than the reader's buffer
// comes out over several Reads, in order; the next Write drops what is left.
func TestChannelSmallReadBuffer(t *testing.T) {
	client, server := net.Pipe()
	resp := response(100)
	fakeTPM(t, server, 7, resp, response(20))
	ch := tpm.NewChannel(client)
	defer ch.Close()

	if _, err := ch.Write([]byte("command")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 30)
	for len(got) < 60 {
		n, err := ch.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, resp[:len(got)]) {
		t.Fatalf("reads in pieces gave %x, want a prefix of %x", got, resp)
	}
	if _, err := ch.Write([]byte("command")); err != nil {
		t.Fatal(err)
	}
	n, err := ch.Read(make([]byte, 4096))
	if err != nil || n != 20 {
		t.Fatalf("Read after a new command = %d, %v; want the new 20-byte response", n, err)
	}
}

// TestChannelBrokenResponses: a size field out of range, or a stream that
// ends within a response, is an error naming what failed.
func TestChannelBrokenResponses(t *testing.T) {
	tooSmall := response(10)
	binary.BigEndian.PutUint32(tooSmall[2:6], 9)
	tooLarge := response(10)
	binary.BigEndian.PutUint32(tooLarge[2:6], 1<<20)
	for _, tc := range []struct {
		name string
		resp []byte
		want string
		is   error
	}{
		{"size below the header's", tooSmall, "response header gives size 9", nil},
		{"size too large", tooLarge, "response header gives size 1048576", nil},
		{"ends in the header", response(50)[:6], "reading response (6 bytes so far)", io.ErrUnexpectedEOF},
		{"ends in the body", response(50)[:30], "reading response (30 bytes so far)", io.ErrUnexpectedEOF},
		{"no response", []byte{}, "reading response (0 bytes so far)", io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			fakeTPM(t, server, 4, tc.resp)
			ch := tpm.NewChannel(client)
			defer ch.Close()
			_, err := ch.Send([]byte("command"))
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if !strings.HasPrefix(err.Error(), "tpm: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one starting %q and containing %q", err, "tpm: ", tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

// TestChannelNoMeasurementLog: only a TPM device has an event log.
func TestChannelNoMeasurementLog(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	ch := tpm.NewChannel(client)
	defer ch.Close()
	if _, err := ch.MeasurementLog(); err == nil {
		t.Fatal("MeasurementLog of a socket succeeded")
	}
}

// TestOpenMissingDevice: the error names the device.
func TestOpenMissingDevice(t *testing.T) {
	path := t.TempDir() + "/tpmrm9"
	_, err := tpm.Open(path, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "tpm: open "+path+": ") {
		t.Fatalf("Open(%s) error = %v, want one starting %q", path, err, "tpm: open "+path+": ")
	}
}
