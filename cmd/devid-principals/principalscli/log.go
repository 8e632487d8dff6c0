package principalscli

import (
	"io"
	"strconv"
	"syscall"
	"time"
)

// Syslog severities; the facility is always authpriv, like sshd's own
// authentication messages.
const (
	facilityAuthpriv = 10 << 3 // LOG_AUTHPRIV
	sevErr           = 3
	sevInfo          = 6
)

// logger writes one line per call to the local syslog socket (journald's
// /dev/log) without ever blocking, and to fallback when there is no syslog
// or it does not take the line. It talks to the socket with system calls
// rather than log/syslog, whose package net would make the helper a
// dynamically linked binary, slower to start at every login.
type logger struct {
	fd       int // the syslog socket, or -1
	stream   bool
	fallback io.Writer // nil: drop
}

// openLog opens the log: to is "syslog" (falling back to fallback) or
// "stderr" (fallback only). It returns nil when neither is available.
func openLog(to string, fallback io.Writer) *logger {
	l := &logger{fd: -1, fallback: fallback}
	if to == "syslog" {
		l.fd, l.stream = dialSyslog(syslogPath)
	}
	if l.fd < 0 && fallback == nil {
		return nil
	}
	return l
}

// syslogPath is the local syslog socket on Linux, journald's or a syslog
// daemon's.
var syslogPath = "/dev/log"

// dialSyslog connects to the syslog socket at path, a datagram socket
// (journald, rsyslog) or a stream socket. It returns -1 if it cannot.
func dialSyslog(path string) (fd int, stream bool) {
	for _, typ := range []int{syscall.SOCK_DGRAM, syscall.SOCK_STREAM} {
		fd, err := syscall.Socket(syscall.AF_UNIX, typ, 0)
		if err != nil {
			return -1, false
		}
		syscall.CloseOnExec(fd)
		if err = syscall.SetNonblock(fd, true); err == nil {
			err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		}
		if err == nil {
			return fd, typ == syscall.SOCK_STREAM
		}
		syscall.Close(fd)
		if err != syscall.EPROTOTYPE { // only the wrong socket type is worth another try
			return -1, false
		}
	}
	return -1, false
}

// write logs a line at severity sev: msg=MSG and the key-value pairs kv
// (see appendRecord), built in one buffer.
func (l *logger) write(sev int, msg string, kv ...string) {
	b := make([]byte, 0, 1024)
	if l.fd >= 0 {
		// RFC 3164 without the host name, as local syslog daemons and
		// journald take it (and log/syslog writes it). The time is UTC so
		// as not to read the time zone: journald and rsyslog's local socket
		// input use their own time of reception anyway.
		b = append(b, '<')
		b = strconv.AppendInt(b, facilityAuthpriv|int64(sev), 10)
		b = append(b, '>')
		b = time.Now().UTC().AppendFormat(b, time.Stamp)
		b = append(b, " "+name+"["...)
		b = strconv.AppendInt(b, int64(syscall.Getpid()), 10)
		b = append(b, "]: "...)
		b = appendRecord(b, msg, kv...)
		if l.stream {
			b = append(b, '\n')
		}
		if n, err := syscall.Write(l.fd, b); err == nil && n == len(b) {
			return
		}
	}
	if l.fallback != nil {
		level := "info"
		if sev <= sevErr {
			level = "error"
		}
		b = append(b[:0], name+": level="+level+" "...)
		b = appendRecord(b, msg, kv...)
		l.fallback.Write(append(b, '\n'))
	}
}

// appendRecord appends msg=MSG and the key-value pairs kv to b, in logfmt.
// A value is quoted, "…", when it is empty or holds a space, a quote, a
// backslash, a control character or non-ASCII, which are escaped: \" \\
// and \xNN, so that a record is always one line of ASCII.
func appendRecord(b []byte, msg string, kv ...string) []byte {
	b = append(b, "msg="...)
	b = append(b, msg...)
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, ' ')
		b = append(b, kv[i]...)
		b = append(b, '=')
		v := kv[i+1]
		plain := v != ""
		for j := 0; j < len(v) && plain; j++ {
			plain = v[j] > ' ' && v[j] < 0x7f && v[j] != '"' && v[j] != '\\'
		}
		if plain {
			b = append(b, v...)
			continue
		}
		b = append(b, '"')
		for j := 0; j < len(v); j++ {
			switch c := v[j]; {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < ' ' || c >= 0x7f:
				b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			default:
				b = append(b, c)
			}
		}
		b = append(b, '"')
	}
	return b
}

const hex = "0123456789abcdef"

func (l *logger) close() {
	if l.fd >= 0 {
		syscall.Close(l.fd)
	}
}
