package caserver

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// CheckAddress checks a listen address: HOST:PORT or :PORT, the host a DNS
// name or an IP address, the port a number from 1 to 65535.
func CheckAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT or :PORT (%v)", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 32)
	switch {
	case err != nil:
		return fmt.Errorf("address %q: port %q: want a number from 1 to 65535", addr, port)
	case n < 1 || n > 65535:
		return fmt.Errorf("address %q: port %d: want 1 to 65535", addr, n)
	}
	if host != "" {
		if err := CheckDNSName(host); err != nil {
			return fmt.Errorf("address %q: host %w", addr, err)
		}
	}
	return nil
}

// CheckDNSName checks a name for the CA's TLS certificate and URL: an IP
// address, or a DNS host name as RFC 1123 has them (dot-separated labels of
// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen;
// 253 characters at most), whose last label is not all digits (so that
// 300.1.1.1 is not taken for a name).
func CheckDNSName(name string) error {
	if name == "" {
		return fmt.Errorf("%q: empty name", name)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%q: not a DNS name (RFC 1123: letters, digits and hyphens in dot-separated labels) or an IP address: %s", name, why)
	}
	if len(name) > 253 {
		return bad(fmt.Sprintf("%d characters, more than 253", len(name)))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return bad("empty label")
		case len(l) > 63:
			return bad(fmt.Sprintf("label %q is longer than 63 characters", l))
		case l[0] == '-' || l[len(l)-1] == '-':
			return bad(fmt.Sprintf("label %q starts or ends with a hyphen", l))
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return bad(fmt.Sprintf("label %q has %q", l, r))
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad("the last label is all digits, and it is not an IP address")
	}
	return nil
}

// checkMetricsAddress checks Config.MetricsAddress: empty, or a listen
// address (CheckAddress) whose port is not the HTTPS listener's on an
// overlapping host, so that /metrics is never on the HTTPS listener.
func checkMetricsAddress(metrics, https string) error {
	if metrics == "" {
		return nil
	}
	if err := CheckAddress(metrics); err != nil {
		return fmt.Errorf("metricsAddress: %w", err)
	}
	mh, mp, _ := net.SplitHostPort(metrics)
	hh, hp, _ := net.SplitHostPort(https)
	if mp == hp && (mh == "" || hh == "" || mh == hh) {
		return fmt.Errorf("metricsAddress %q: the HTTPS address %q has this port: metrics need a listener of their own", metrics, https)
	}
	return nil
}
