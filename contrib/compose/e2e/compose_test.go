package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/debimage"
	"github.com/devid-ssh/devid/internal/dockertest"
	"github.com/devid-ssh/devid/packaging/containerpkgs"
)

// lifetime of every certificate the set's CA issues: renewals come every
// minute or so (at 2/3 of it).
const lifetime = 90 * time.Second

var hosts = []string{"host-1", "host-2"}

// TestCompose runs contrib/compose's set on each image and tells the story
// of the package documentation, each step waiting for what the daemons
// report (status.json, sshd's log), never for a time.
func TestCompose(t *testing.T) {
	dockertest.Need(t)
	compose := dockertest.Compose(t)
	pkgs := containerpkgs.ForTest(t)
	for _, suite := range debimage.Suites() {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			img := dockertest.Image(t, suite)
			start := time.Now()
			step := func(what string) {
				t.Logf("%s: %s (%s since up)", suite, what, time.Since(start).Round(100*time.Millisecond))
			}
			s := up(t, compose, img, pkgs, lifetime)
			step("the set is up")
			s.enrolled()
			step("enrolled")
			for _, h := range hosts {
				s.login(h)
			}
			step("logged in to both hosts")
			s.renewals()
			step("renewed, sshd reloaded")
			s.caOutage()
			step("logins through a CA outage, renewed after it")
			s.quarantineAndPartition()
			step("quarantine: refused by both hosts")
		})
	}
}

// enrolled waits until both hosts have their host certificates (sshd
// reloaded, the devid snippet in), the user CA keys and the CA's KRL, and
// the workstation its user certificate, host CA keys and KRL.
func (s *set) enrolled() {
	s.t.Helper()
	for _, h := range hosts {
		dockertest.Poll(s.t, waitLimit, h+"'s enrolment", func() (bool, string) {
			st, err := s.hostStatus(h)
			if err != nil {
				return false, err.Error()
			}
			if _, err := s.exec(h, "test", "-f", "/etc/ssh/sshd_config.d/devid.conf"); err != nil {
				return false, "no devid snippet in sshd_config.d yet"
			}
			return st.HostCert != nil && st.SSHDReloads > 0 && st.UserCA > 0 && st.KRLVersion > 0, fmt.Sprintf("%+v", st)
		})
	}
	dockertest.Poll(s.t, waitLimit, "the workstation's enrolment", func() (bool, string) {
		st, err := s.agentStatus()
		if err != nil {
			return false, err.Error()
		}
		return st.Certificate != nil && st.HostCAKeys > 0 && st.KRLVersion > 0, fmt.Sprintf("%+v", st)
	})
}

// serials are the certificates' serials the set holds now.
type serials map[string]uint64 // host or "workstation"

func (s *set) serials() serials {
	s.t.Helper()
	out := serials{}
	for _, h := range hosts {
		st, err := s.hostStatus(h)
		if err != nil || st.HostCert == nil {
			s.t.Fatalf("%s: no host certificate: %v", h, err)
		}
		out[h] = st.HostCert.Serial
	}
	st, err := s.agentStatus()
	if err != nil || st.Certificate == nil {
		s.t.Fatalf("workstation: no user certificate: %v", err)
	}
	out["workstation"] = st.Certificate.Serial
	return out
}

// renewed waits until every certificate of before was replaced.
func (s *set) renewed(before serials, why string) {
	s.t.Helper()
	for _, h := range hosts {
		dockertest.Poll(s.t, waitLimit, h+"'s renewal "+why, func() (bool, string) {
			st, err := s.hostStatus(h)
			if err != nil || st.HostCert == nil {
				return false, fmt.Sprint(err)
			}
			return st.HostCert.Serial != before[h], fmt.Sprintf("serial %d, next renewal %s", st.HostCert.Serial, st.HostCert.NextRenewal)
		})
	}
	dockertest.Poll(s.t, waitLimit, "the workstation's renewal "+why, func() (bool, string) {
		st, err := s.agentStatus()
		if err != nil || st.Certificate == nil {
			return false, fmt.Sprint(err)
		}
		return st.Certificate.Serial != before["workstation"], fmt.Sprintf("serial %d, last error %q", st.Certificate.Serial, st.LastError)
	})
}

// renewals: each host renews its certificate and reloads sshd, which
// then presents the new certificate; the workstation renews too; logins
// go on.
func (s *set) renewals() {
	s.t.Helper()
	before := s.serials()
	reloads := map[string]uint64{}
	for _, h := range hosts {
		st, _ := s.hostStatus(h)
		reloads[h] = st.SSHDReloads
	}
	s.renewed(before, "at 2/3 of the lifetime")
	for _, h := range hosts {
		dockertest.Poll(s.t, waitLimit, h+"'s sshd presenting the renewed certificate", func() (bool, string) {
			st, err := s.hostStatus(h)
			if err != nil || st.HostCert == nil {
				return false, fmt.Sprint(err)
			}
			presented, err := dockertest.PresentedSerial(s.ids["workstation"], h)
			return err == nil && st.SSHDReloads > reloads[h] && presented == st.HostCert.Serial,
				fmt.Sprintf("status serial %d, reloads %d (were %d); sshd presents %d (%v)", st.HostCert.Serial, st.SSHDReloads, reloads[h], presented, err)
		})
		s.login(h)
	}
}

// caOutage: with the CA stopped, both hosts still let the workstation in;
// started again, every machine renews.
func (s *set) caOutage() {
	s.t.Helper()
	if out, err := s.run(downTimeout, "stop", "ca"); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	for _, h := range hosts {
		s.login(h)
	}
	before := s.serials()
	if out, err := s.run(downTimeout, "start", "ca"); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	s.renewed(before, "after the CA came back")
	for _, h := range hosts {
		s.login(h)
	}
}

// quarantineAndPartition: host-2 is cut off from the network and the
// workstation quarantined; host-1 refuses the workstation at once
// ("revoked", its KRL); host-2, back on the network, catches up with the
// KRL and refuses it too.
func (s *set) quarantineAndPartition() {
	s.t.Helper()
	// Fresh certificates first: the checks below need the workstation's
	// certificate offered (and refused as revoked), and host-2's still
	// valid, until host-2 is back and has the KRL, and neither renews
	// meanwhile (the workstation is quarantined, host-2 cut off). With
	// certificates of 90 s, one renewed a minute before would not last.
	before := s.serials()
	if out, err := s.exec("workstation", "pkill", "-USR1", "-x", "devid-agent"); err != nil {
		s.t.Fatalf("renewing the workstation's certificate (SIGUSR1): %v\n%s", err, out)
	}
	if out, err := s.exec("host-2", "devid-hostd", "renew"); err != nil {
		s.t.Fatalf("renewing host-2's certificate: %v\n%s", err, out)
	}
	dockertest.Poll(s.t, waitLimit, "host-2's renewal before the partition", func() (bool, string) {
		st, err := s.hostStatus("host-2")
		if err != nil || st.HostCert == nil {
			return false, fmt.Sprint(err)
		}
		return st.HostCert.Serial != before["host-2"], fmt.Sprintf("serial %d", st.HostCert.Serial)
	})
	dockertest.Poll(s.t, waitLimit, "the workstation's renewal before the quarantine", func() (bool, string) {
		st, err := s.agentStatus()
		if err != nil || st.Certificate == nil {
			return false, fmt.Sprint(err)
		}
		return st.Certificate.Serial != before["workstation"], fmt.Sprintf("serial %d, last error %q", st.Certificate.Serial, st.LastError)
	})
	st, err := s.hostStatus("host-2")
	if err != nil {
		s.t.Fatal(err)
	}
	cut := st.KRLVersion
	dockertest.Run(s.t, "network", "disconnect", s.network, s.ids["host-2"])
	if out, err := s.exec("ca", "devid", "device", "quarantine", "workstation", "--reason", "lost (compose e2e)"); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	var krl uint64
	quarantined := time.Now()
	dockertest.Poll(s.t, waitLimit, "host-1's KRL after the quarantine", func() (bool, string) {
		st, err := s.hostStatus("host-1")
		if err != nil {
			return false, err.Error()
		}
		krl = st.KRLVersion
		return krl > cut, fmt.Sprintf("KRL version %d, was %d", krl, cut)
	})
	s.t.Logf("host-1 had KRL version %d %s after the quarantine", krl, time.Since(quarantined).Round(10*time.Millisecond))
	s.refused("host-1", "revoked")
	if st, err := s.hostStatus("host-2"); err != nil || st.KRLVersion != cut {
		s.t.Fatalf("host-2, cut off: KRL version %v (%v), want still %d", st, err, cut)
	}
	dockertest.Run(s.t, "network", "connect", "--alias", "host-2", s.network, s.ids["host-2"])
	back := time.Now()
	dockertest.Poll(s.t, waitLimit, "host-2's KRL once back on the network", func() (bool, string) {
		st, err := s.hostStatus("host-2")
		if err != nil {
			return false, err.Error()
		}
		return st.KRLVersion >= krl, fmt.Sprintf("KRL version %d, want %d", st.KRLVersion, krl)
	})
	s.t.Logf("host-2 had KRL version %d %s after it was back on the network", krl, time.Since(back).Round(10*time.Millisecond))
	s.refused("host-2", "revoked")
}
