package hostd

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/devid-ssh/devid/hostnames"
	"github.com/devid-ssh/devid/internal/conffile"
	"github.com/devid-ssh/devid/renew"
)

// ConfigVersion is the configuration format this package reads.
const ConfigVersion = 1

// DefaultConfigFile is where devid-hostd looks for its configuration.
const DefaultConfigFile = "/etc/devid/hostd.json"

// Config is devid-hostd's configuration file (JSON). Unknown fields are
// errors naming the file and line; every field but caUrl and root has a
// default.
type Config struct {
	// Version of the format: 1.
	Version int `json:"version"`
	// CAURL is devid-ca's URL, https://host:port.
	CAURL string `json:"caUrl"`
	// Root is the CA's root certificate (PEM), pinned: nothing else is
	// trusted. `devid bootstrap` fetches it by fingerprint.
	Root string `json:"root"`
	// TPM is the host's TPM: a device (default /dev/tpmrm0), or
	// unix:PATH / tcp:HOST:PORT for a software TPM.
	TPM string `json:"tpm"`
	// TPMHostKey is the key file of the host key, which lives in the TPM
	// (default /var/lib/devid-hostd/ssh_host_key.tpm): made once, useless
	// on any other machine. devid-hostd serves the key to sshd on
	// HostKeyAgent.
	TPMHostKey string `json:"tpmHostKey"`
	// SSHDHostKey is what sshd_config's HostKey names for the TPM key
	// (default /etc/ssh/devid/ssh_host_tpm_key): devid-hostd writes the
	// public half at SSHDHostKey.pub and nothing else there, so sshd,
	// finding no private key, signs through HostKeyAgent.
	SSHDHostKey string `json:"sshdHostKey"`
	// HostKeyAgent is the socket sshd_config's HostKeyAgent names (default
	// /run/devid-hostd/hostkey.sock), unless systemd passes the socket
	// (devid-hostd.socket).
	HostKeyAgent string `json:"hostKeyAgent"`
	// HostKey, if set, is a private SSH host key FILE certified instead of
	// the TPM key: only for a migration, which the CA must allow for the
	// host's collection. Its public key is HostKey+".pub"; if neither
	// exists, devid-hostd creates them (HostKeyType).
	HostKey string `json:"hostKey"`
	// HostKeyType is the type of a file host key devid-hostd creates:
	// "ecdsa" (P-256, the default) or "ed25519".
	HostKeyType string `json:"hostKeyType"`
	// HostCertificate is where the host certificate is written (default
	// SSHDHostKey-cert.pub, or /etc/ssh/devid/<HostKey's name>-cert.pub);
	// sshd_config's HostCertificate must name it.
	HostCertificate string `json:"hostCertificate"`
	// Principals are the names to ask for in the host certificate, each
	// one the CA's inventory must allow the device (its name, its host
	// names, its collection's). Default: none, and the CA gives the names
	// the inventory has for the device (its name if it is a host name, and
	// its exact host names).
	Principals []string `json:"principals"`
	// TrustedUserCAKeys is the file sshd's TrustedUserCAKeys names (default
	// /etc/ssh/devid/user_ca.pub): the CA's SSH user CA keys.
	TrustedUserCAKeys string `json:"trustedUserCAKeys"`
	// RevokedKeys is the file sshd's RevokedKeys names (default
	// /etc/ssh/devid/revoked.krl): the CA's KRL. devid-hostd writes a
	// valid empty KRL first if there is none, since sshd refuses every
	// public-key login while RevokedKeys names a missing file. "off"
	// disables the KRL task.
	RevokedKeys string `json:"revokedKeys"`
	// SSHD is how to check sshd's configuration before a reload.
	SSHD SSHDConfig `json:"sshd"`
	// Reload is how to make sshd reread its files.
	Reload ReloadConfig `json:"reload"`
	// MetricsAddress serves Prometheus metrics at /metrics (default
	// 127.0.0.1:9750, loopback only); "off" disables it.
	MetricsAddress string `json:"metricsAddress"`
	// RenewFraction of the certificate's lifetime at which to renew
	// (default 0.6667).
	RenewFraction float64 `json:"renewFraction"`
	// UserCAInterval is how often to fetch the user CA keys (default 5m).
	UserCAInterval conffile.Duration `json:"userCaInterval"`
	// StateDir holds status.json, which `devid-hostd status` reads
	// (default /run/devid-hostd).
	StateDir string `json:"stateDir"`
	// Enrolment is the one-time enrolment token of a host registered
	// without its EK (see EnrolmentConfig); none by default.
	Enrolment EnrolmentConfig `json:"enrolment"`

	file string
}

// SSHDConfig locates sshd and its configuration.
type SSHDConfig struct {
	// Binary is sshd (default /usr/sbin/sshd), run as `sshd -t -f Config`.
	Binary string `json:"binary"`
	// Config is sshd's configuration file (default /etc/ssh/sshd_config).
	Config string `json:"config"`
}

// ReloadConfig says how to reload sshd. Exactly one of the two, or neither
// for the default (systemd unit ssh.service).
type ReloadConfig struct {
	// SystemdUnit is reloaded through systemd's D-Bus API.
	SystemdUnit string `json:"systemdUnit,omitempty"`
	// PIDFile names sshd's pid file; sshd gets SIGHUP.
	PIDFile string `json:"pidFile,omitempty"`
}

// ConfigVersion implements conffile's version check.
func (c *Config) ConfigVersion() int { return c.Version }

// File is the file the configuration was read from.
func (c *Config) File() string { return c.file }

// LoadConfig reads, defaults and checks a configuration file.
func LoadConfig(file string) (*Config, error) {
	var c Config
	if err := conffile.Load(file, &c, ConfigVersion); err != nil {
		return nil, fmt.Errorf("devid-hostd config: %w", err)
	}
	c.file = file
	if err := c.setDefaults(); err != nil {
		return nil, fmt.Errorf("devid-hostd config: %s: %w", file, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("devid-hostd config: %s: %w", file, err)
	}
	return &c, nil
}

func (c *Config) setDefaults() error {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.TPM, "/dev/tpmrm0")
	def(&c.HostKeyType, "ecdsa")
	if c.HostKey == "" {
		def(&c.TPMHostKey, "/var/lib/devid-hostd/ssh_host_key.tpm")
		def(&c.SSHDHostKey, "/etc/ssh/devid/ssh_host_tpm_key")
		def(&c.HostKeyAgent, "/run/devid-hostd/hostkey.sock")
		def(&c.HostCertificate, c.SSHDHostKey+"-cert.pub")
	} else {
		def(&c.HostCertificate, "/etc/ssh/devid/"+filepath.Base(c.HostKey)+"-cert.pub")
	}
	def(&c.TrustedUserCAKeys, "/etc/ssh/devid/user_ca.pub")
	def(&c.RevokedKeys, "/etc/ssh/devid/revoked.krl")
	def(&c.SSHD.Binary, "/usr/sbin/sshd")
	def(&c.SSHD.Config, "/etc/ssh/sshd_config")
	def(&c.MetricsAddress, "127.0.0.1:9750")
	def(&c.StateDir, "/run/devid-hostd")
	if c.Reload.SystemdUnit == "" && c.Reload.PIDFile == "" {
		c.Reload.SystemdUnit = "ssh.service"
	}
	if c.RenewFraction == 0 {
		c.RenewFraction = 2.0 / 3
	}
	if c.UserCAInterval.Duration == 0 {
		c.UserCAInterval.Duration = 5 * time.Minute
	}
	return nil
}

func (c *Config) check() error {
	switch {
	case c.CAURL == "":
		return errors.New("caUrl is required")
	case !strings.HasPrefix(c.CAURL, "https://"):
		return fmt.Errorf("caUrl %q: want https://host[:port]", c.CAURL)
	case checkCAURL(c.CAURL) != nil:
		return fmt.Errorf("caUrl %q: %w", c.CAURL, checkCAURL(c.CAURL))
	case c.Root == "":
		return errors.New("root is required (the CA's root certificate; devid bootstrap fetches it)")
	case c.HostKey != "" && (c.TPMHostKey != "" || c.SSHDHostKey != "" || c.HostKeyAgent != ""):
		return errors.New("hostKey (a file key) and tpmHostKey, sshdHostKey or hostKeyAgent (the TPM key) exclude each other")
	case c.HostKeyType != "ecdsa" && c.HostKeyType != "ed25519":
		return fmt.Errorf("hostKeyType %q: want ecdsa or ed25519", c.HostKeyType)
	case c.Reload.SystemdUnit != "" && c.Reload.PIDFile != "":
		return errors.New("reload: give systemdUnit or pidFile, not both")
	case c.RenewFraction <= 0 || c.RenewFraction >= 1:
		return fmt.Errorf("renewFraction %v: want a number between 0 and 1", c.RenewFraction)
	}
	if err := (renew.Policy{Fraction: c.RenewFraction}).Validate(); err != nil {
		return fmt.Errorf("renewFraction: %w", err)
	}
	revokedKeys := c.RevokedKeys // "off", or a path
	if revokedKeys == "off" {
		revokedKeys = "/off"
	}
	keyPaths := []struct{ name, path string }{{"hostKey", c.HostKey}}
	if c.TPMHostKeyMode() {
		keyPaths = []struct{ name, path string }{{"tpmHostKey", c.TPMHostKey}, {"sshdHostKey", c.SSHDHostKey}, {"hostKeyAgent", c.HostKeyAgent}}
	}
	for _, p := range append(keyPaths, []struct{ name, path string }{
		{"hostCertificate", c.HostCertificate}, {"trustedUserCAKeys", c.TrustedUserCAKeys},
		{"revokedKeys", revokedKeys},
		{"sshd.binary", c.SSHD.Binary}, {"sshd.config", c.SSHD.Config}, {"stateDir", c.StateDir},
	}...) {
		if !filepath.IsAbs(p.path) {
			return fmt.Errorf("%s %q: want an absolute path", p.name, p.path)
		}
	}
	for _, p := range c.Principals {
		if !hostnames.Valid(p) {
			why := "a pattern or prefix; give exact names (the CA checks them against the inventory's patterns)"
			if _, err := hostnames.Parse(p); err != nil {
				why = err.Error()
			}
			return fmt.Errorf("principals: %q is not a host name or address: %s", p, why)
		}
	}
	if _, err := ParseTPMAddress(c.TPM); err != nil {
		return fmt.Errorf("tpm %q: %w", c.TPM, err)
	}
	if err := c.Enrolment.Check(); err != nil {
		return err
	}
	if c.MetricsAddress != "off" {
		if err := checkHostPort(c.MetricsAddress, false); err != nil {
			return fmt.Errorf("metricsAddress %q: %w", c.MetricsAddress, err)
		}
	}
	return nil
}

// TPMHostKeyMode reports whether the host key lives in the TPM (no
// hostKey file configured).
func (c *Config) TPMHostKeyMode() bool { return c.HostKey == "" }
