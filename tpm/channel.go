package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Sizes of the TPM 2.0 response framing (TPM 2.0 Part 1, section 18: every
// response starts with a 10-byte header: tag (2 bytes), responseSize (4
// bytes, the size of the whole response, header included), responseCode (4
// bytes)).
const (
	headerSize = 10
	// maxResponseSize bounds the size field a channel believes. TPMs send
	// at most a few KiB (the Linux driver's buffer is 4096 bytes, as is the
	// buffer go-tpm reads into); anything much larger is a broken stream.
	maxResponseSize = 1 << 16
)

// Channel is a command channel to a TPM 2.0: a character device such as
// /dev/tpmrm0, or a stream connection to a software TPM (swtpm).
//
// A command is one Write; its response is delivered whole by the next Read
// (given a buffer large enough; the rest comes in the Reads after), however
// the bytes trickle in from a socket. go-tpm's legacy API, which
// go-attestation uses, reads each response with exactly one Read, so a
// channel that handed back part of a response would break it.
//
// Channel implements go-attestation's attest.CommandChannelTPM20 and go-tpm's
// transport.TPM. It is not safe for concurrent use; [TPM] serialises access.
type Channel struct {
	rwc     io.ReadWriteCloser
	name    string // for error messages: the device path or the address
	logPath string // the measurement log, or "" when there is none
	device  bool   // a character device, which returns whole responses
	pending []byte // rest of the last response, not yet read
	resp    [maxResponseSize]byte
}

// OpenChannel opens the TPM character device at path, such as /dev/tpmrm0
// (the kernel's resource-managed device) or /dev/tpm0.
func OpenChannel(path string) (*Channel, error) {
	// Keep the descriptor blocking: then the kernel runs a command within
	// write(2) and read(2) returns its response. os.OpenFile would make it
	// non-blocking (the TPM driver supports poll), and the driver answers
	// a read before the response is ready with 0 bytes: EOF.
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("tpm: open %s: %w: this user may not use the TPM; on Debian and Ubuntu /dev/tpmrm0 belongs to the group tss: `sudo usermod -aG tss $USER`, then log in again", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	c := NewChannel(os.NewFile(uintptr(fd), path))
	c.device = true
	// /dev/tpmrm0 and /dev/tpm0 share the event log of tpm0.
	dev := strings.TrimPrefix(strings.TrimPrefix(filepath.Base(path), "tpmrm"), "tpm")
	if dev != filepath.Base(path) {
		c.logPath = "/sys/kernel/security/tpm" + dev + "/binary_bios_measurements"
	}
	return c, nil
}

// DialChannel connects to a software TPM's command port: network is "unix"
// (address a socket path, e.g. swtpm's --server type=unixio,path=...) or
// "tcp" (address host:port of swtpm's --server type=tcp).
func DialChannel(network, address string) (*Channel, error) {
	conn, err := net.Dial(network, address)
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err) // "dial unix /path: ..."
	}
	return NewChannel(conn), nil
}

// NewChannel makes a channel of an already connected stream or file: a
// net.Conn, or an *os.File such as one end of a socketpair whose other end
// a swtpm serves (swtpm socket --fd). The channel owns rwc and closes it.
func NewChannel(rwc io.ReadWriteCloser) *Channel {
	name := fmt.Sprintf("%T", rwc)
	switch v := rwc.(type) {
	case *os.File:
		name = v.Name()
	case net.Conn:
		if a := v.RemoteAddr(); a != nil && a.String() != "" {
			name = a.String()
		}
	}
	return &Channel{rwc: rwc, name: name}
}

// Write sends one whole TPM command. A response not yet read is dropped.
func (c *Channel) Write(cmd []byte) (int, error) {
	c.pending = nil
	n, err := c.rwc.Write(cmd)
	if err != nil {
		return n, fmt.Errorf("tpm: %s: sending command: %w", c.name, err)
	}
	return n, nil
}

// Read returns the response to the last command, whole if p can hold it.
func (c *Channel) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		resp, err := c.readResponse()
		if err != nil {
			return 0, err
		}
		c.pending = resp
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// readResponse reads one response: its header, then the rest as the
// header's size field says. The returned slice aliases c.resp.
func (c *Channel) readResponse() ([]byte, error) {
	// A stream may deliver the response in pieces: ask for the header,
	// then for exactly the bytes its size field promises, never past the
	// end of this response. A character device hands over the whole
	// response to one read large enough for it (and older kernels drop
	// whatever a smaller read leaves), so ask it for everything.
	n, want, sized := 0, headerSize, false
	if c.device {
		want = len(c.resp)
	}
	for !sized || n < want {
		m, err := c.rwc.Read(c.resp[n:want])
		n += m
		if m == 0 && err == nil {
			err = io.ErrNoProgress
		}
		if !sized && n >= headerSize {
			size := binary.BigEndian.Uint32(c.resp[2:6])
			if size < headerSize || size > maxResponseSize || int(size) < n {
				return nil, fmt.Errorf("tpm: %s: response header gives size %d, read %d bytes", c.name, size, n)
			}
			want, sized = int(size), true
		}
		if err != nil && (!sized || n < want) {
			if errors.Is(err, io.EOF) && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("tpm: %s: reading response (%d bytes so far): %w", c.name, n, err)
		}
	}
	return c.resp[:n], nil
}

// Send implements go-tpm's transport.TPM: it writes cmd and returns a copy
// of the whole response.
func (c *Channel) Send(cmd []byte) ([]byte, error) {
	if _, err := c.Write(cmd); err != nil {
		return nil, err
	}
	resp, err := c.readResponse()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), resp...), nil
}

// MeasurementLog implements attest.CommandChannelTPM20: it returns the
// firmware's event log of a TPM device opened with [OpenChannel]. Other
// channels have none.
func (c *Channel) MeasurementLog() ([]byte, error) {
	if c.logPath == "" {
		return nil, fmt.Errorf("tpm: %s: no measurement log for this channel", c.name)
	}
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: reading measurement log: %w", c.name, err)
	}
	return b, nil
}

// Close closes the device or connection.
func (c *Channel) Close() error {
	if err := c.rwc.Close(); err != nil {
		return fmt.Errorf("tpm: %s: close: %w", c.name, err)
	}
	return nil
}
