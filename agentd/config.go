package agentd

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/conffile"
)

// ConfigVersion is the configuration format this package reads.
const ConfigVersion = 1

// DefaultConfigFile is where devid-agent looks for its configuration: one
// file for the whole machine, which an MDM or `devid bootstrap` installs.
const DefaultConfigFile = "/etc/devid/agent.json"

// Config is devid-agent's configuration file (JSON). Unknown fields are
// errors naming the file and line; every field but caUrl and root has a
// default. The per-user paths default from the environment (XDG base
// directories), so one file serves every user of the machine.
type Config struct {
	// Version of the format: 1.
	Version int `json:"version"`
	// CAURL is devid-ca's URL, https://host:port.
	CAURL string `json:"caUrl"`
	// Root is the CA's root certificate (PEM), pinned: nothing else is
	// trusted.
	Root string `json:"root"`
	// TPM is the machine's TPM: a device (default /dev/tpmrm0), or
	// unix:PATH / tcp:HOST:PORT for a software TPM.
	TPM string `json:"tpm"`
	// StateDir holds the user's TPM key file, certificate, known_hosts,
	// KRL and status (default $XDG_STATE_HOME/devid, else
	// ~/.local/state/devid).
	StateDir string `json:"stateDir"`
	// Socket is where the ssh-agent socket is made when systemd does not
	// pass one (default $XDG_RUNTIME_DIR/devid-agent.sock, else
	// StateDir/agent.sock).
	Socket string `json:"socket"`
	// RenewFraction of the certificate's lifetime at which to renew
	// (default 0.6667).
	RenewFraction float64 `json:"renewFraction"`
	// HostCAInterval is how often to fetch the host CA keys for
	// known_hosts (default 1h).
	HostCAInterval conffile.Duration `json:"hostCaInterval"`
	// Enrolment is the one-time enrolment token of a workstation
	// registered without its EK (see hostd.EnrolmentConfig); none by
	// default.
	Enrolment hostd.EnrolmentConfig `json:"enrolment"`

	file string
}

// ConfigVersion implements conffile's version check.
func (c *Config) ConfigVersion() int { return c.Version }

// LoadConfig reads, defaults and checks a configuration file; getenv reads
// the environment (os.Getenv).
func LoadConfig(file string, getenv func(string) string) (*Config, error) {
	var c Config
	if err := conffile.Load(file, &c, ConfigVersion); err != nil {
		return nil, fmt.Errorf("devid-agent config: %w", err)
	}
	c.file = file
	if err := c.setDefaults(getenv); err != nil {
		return nil, fmt.Errorf("devid-agent config: %s: %w", file, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("devid-agent config: %s: %w", file, err)
	}
	return &c, nil
}

func (c *Config) setDefaults(getenv func(string) string) error {
	if c.TPM == "" {
		c.TPM = "/dev/tpmrm0"
	}
	if c.StateDir == "" {
		switch {
		case filepath.IsAbs(getenv("XDG_STATE_HOME")):
			c.StateDir = filepath.Join(getenv("XDG_STATE_HOME"), "devid")
		case filepath.IsAbs(getenv("HOME")):
			c.StateDir = filepath.Join(getenv("HOME"), ".local", "state", "devid")
		default:
			return errors.New("stateDir: not set, and neither XDG_STATE_HOME nor HOME is an absolute path")
		}
	}
	if c.Socket == "" {
		if rt := getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
			c.Socket = filepath.Join(rt, "devid-agent.sock")
		} else {
			c.Socket = filepath.Join(c.StateDir, "agent.sock")
		}
	}
	if c.RenewFraction == 0 {
		c.RenewFraction = 2.0 / 3
	}
	if c.HostCAInterval.Duration == 0 {
		c.HostCAInterval.Duration = 3600e9
	}
	return nil
}

func (c *Config) check() error {
	if !strings.HasPrefix(c.CAURL, "https://") {
		return fmt.Errorf("caUrl %q: want https://host:port", c.CAURL)
	}
	if c.Root == "" {
		return errors.New("root: the CA's root certificate file is required")
	}
	if _, err := hostd.ParseTPMAddress(c.TPM); err != nil {
		return fmt.Errorf("tpm %q: %w", c.TPM, err)
	}
	for name, p := range map[string]string{"stateDir": c.StateDir, "socket": c.Socket} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%s %q: want an absolute path", name, p)
		}
	}
	if c.RenewFraction <= 0 || c.RenewFraction >= 1 {
		return fmt.Errorf("renewFraction %v: want between 0 and 1", c.RenewFraction)
	}
	return c.Enrolment.Check()
}

// Paths of the files devid-agent keeps in StateDir.
type Paths struct {
	Key        string // the TPM key file (TSS2 PRIVATE KEY): useless on any other TPM
	PublicKey  string // its public half, in authorized_keys format
	Cert       string // the user certificate
	KnownHosts string // @cert-authority lines for the CA's host CA keys
	KRL        string // the CA's KRL, for ssh's RevokedHostKeys
}

// Paths returns where the files are.
func (c *Config) Paths() Paths {
	j := func(n string) string { return filepath.Join(c.StateDir, n) }
	return Paths{Key: j("id_devid.tpm"), PublicKey: j("id_devid.pub"), Cert: j("id_devid-cert.pub"),
		KnownHosts: j("known_hosts"), KRL: j("revoked_host_keys.krl")}
}

// SSHConfig is the ssh_config(5) block that makes ssh use devid-agent: its
// socket for keys, its known_hosts for host certificates, its KRL for
// revoked hosts. The user's own known_hosts comes first: ssh adds the host
// keys it learns to the first file, and devid-agent rewrites its own.
func (c *Config) SSHConfig() string {
	p := c.Paths()
	return fmt.Sprintf(`# devid: keys from devid-agent (in the TPM), hosts by devid-ca's host certificates.
Host *
    IdentityAgent %s
    UserKnownHostsFile ~/.ssh/known_hosts %s
    RevokedHostKeys %s
`, quote(c.Socket), quote(p.KnownHosts), quote(p.KRL))
}

// quote quotes a path for ssh_config if it needs it.
func quote(p string) string {
	if strings.ContainsAny(p, " \t\"") {
		return `"` + p + `"`
	}
	return p
}
