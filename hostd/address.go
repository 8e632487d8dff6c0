package hostd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/devid-ssh/devid/tpm"
)

// TPMAddress is the configuration's tpm field, parsed: the one parser that
// both `devid-hostd check` and `run` use, so that check refuses what run
// could never open.
type TPMAddress struct {
	// Network is "device" (a character device such as /dev/tpmrm0),
	// "unix" or "tcp" (a software TPM's command port).
	Network string
	// Address is the device's or socket's absolute path, or HOST:PORT.
	Address string
}

// ParseTPMAddress parses a TPM address: an absolute device path,
// unix:ABSOLUTE-PATH, or tcp:HOST:PORT with PORT in 1-65535.
func ParseTPMAddress(s string) (TPMAddress, error) {
	switch {
	case s == "":
		return TPMAddress{}, errors.New("empty: want a device path, unix:PATH or tcp:HOST:PORT")
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !filepath.IsAbs(p) {
			return TPMAddress{}, errors.New("want unix: and an absolute path")
		}
		return TPMAddress{Network: "unix", Address: p}, nil
	case strings.HasPrefix(s, "tcp:"):
		hp := strings.TrimPrefix(s, "tcp:")
		if err := checkHostPort(hp, true); err != nil {
			return TPMAddress{}, fmt.Errorf("want tcp:HOST:PORT: %w", err)
		}
		return TPMAddress{Network: "tcp", Address: hp}, nil
	case !filepath.IsAbs(s):
		return TPMAddress{}, errors.New("want an absolute device path (such as /dev/tpmrm0), unix:PATH or tcp:HOST:PORT")
	}
	return TPMAddress{Network: "device", Address: s}, nil
}

// Open opens the TPM at a.
func (a TPMAddress) Open(cfg *tpm.Config) (*tpm.TPM, error) {
	if a.Network == "device" {
		return tpm.Open(a.Address, cfg)
	}
	return tpm.Dial(a.Network, a.Address, cfg)
}

// checkHostPort checks HOST:PORT: a port number in 1-65535, and a host
// without spaces, which must be there if needHost.
func checkHostPort(hp string, needHost bool) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	if needHost && host == "" {
		return errors.New("no host")
	}
	if strings.ContainsAny(host, " \t\r\n/") {
		return fmt.Errorf("host %q is not a host name or address", host)
	}
	return checkPort(port)
}

// checkPort checks a port number: decimal, 1-65535.
func checkPort(port string) error {
	// Digits only: strconv.Atoi takes "+80", which net then refuses.
	n, err := strconv.ParseUint(port, 10, 32)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Errorf("port %q is not a number", port)
	}
	if n < 1 || n > 65535 {
		return fmt.Errorf("port %d is out of range (1-65535)", n)
	}
	return nil
}

// checkCAURL checks caUrl: https://HOST[:PORT] with PORT in 1-65535.
func checkCAURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || u.Hostname() == "" {
		return errors.New("want https://host[:port]")
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		return checkPort(p)
	}
	return nil
}
