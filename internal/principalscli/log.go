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
	facilityAuthpriv = 10 << 3
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

// write logs line at severity sev.
func (l *logger) write(sev int, line string) {
	if l.fd >= 0 {
		// RFC 3164 without the host name, as local syslog daemons and
		// journald take it (and log/syslog writes it). The time is UTC so
		// as not to read the time zone: journald and rsyslog's local socket
		// input use their own time of reception anyway.
		msg := "<" + strconv.Itoa(facilityAuthpriv|sev) + ">" + time.Now().UTC().Format(time.Stamp) + " " + name + "[" + strconv.Itoa(syscall.Getpid()) + "]: " + line
		if l.stream {
			msg += "\n"
		}
		if n, err := syscall.Write(l.fd, []byte(msg)); err == nil && n == len(msg) {
			return
		}
	}
	if l.fallback != nil {
		level := "info"
		if sev <= sevErr {
			level = "error"
		}
		io.WriteString(l.fallback, name+": level="+level+" "+line+"\n")
	}
}

func (l *logger) close() {
	if l.fd >= 0 {
		syscall.Close(l.fd)
	}
}
