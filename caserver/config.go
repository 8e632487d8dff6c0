package caserver

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/internal/conffile"
)

// ConfigVersion is the configuration format this package reads.
const ConfigVersion = 1

// Config is devid-ca's configuration file (JSON, written by Init). Relative
// paths are relative to the directory holding the file. Unknown fields are
// errors.
type Config struct {
	// Version of the format: 1.
	Version int `json:"version"`
	// Address to listen on for HTTPS, host:port. Default ":8443".
	Address string `json:"address"`
	// MetricsAddress is where Prometheus metrics are served, in plain
	// HTTP at /metrics, host:port: a listener of its own, never the HTTPS
	// one. Empty (the default): no metrics listener. `devid-ca init` and
	// the packaged service use 127.0.0.1:9751, loopback only (devid-hostd's
	// is 9750).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// DNSNames (and IP addresses) in the CA's TLS certificate: the names
	// clients use in the CA URL. At least one.
	DNSNames []string `json:"dnsNames"`
	// Root is the X.509 root certificate (PEM) clients pin.
	Root string `json:"root"`
	// Intermediate certificate and key (PEM) that sign X.509 certificates.
	Intermediate    string `json:"intermediate"`
	IntermediateKey string `json:"intermediateKey"`
	// SSHHostKey and SSHUserKey are the private keys (PEM) that sign SSH host
	// and user certificates.
	SSHHostKey string `json:"sshHostKey"`
	SSHUserKey string `json:"sshUserKey"`
	// AdminRoot is the certificate (PEM) of the CA that issues admin client
	// certificates. Only a TLS client certificate that chains to it may use
	// the admin API (/devid/v1/), and such a certificate may use nothing else.
	AdminRoot string `json:"adminRoot"`
	// Attestation configures the TPM Attestation CA.
	Attestation AttestationConfig `json:"attestation"`
	// DB is the store: step-ca's tables and devid's inventory.
	DB DBConfig `json:"db"`
	// Lifetimes of the certificates the CA issues.
	Lifetimes Lifetimes `json:"lifetimes"`
	// Log sets the format of devid-ca's own log on standard error.
	Log LogConfig `json:"log"`
	// Limits bound what one client can make the CA read and hold.
	Limits LimitsConfig `json:"limits"`
	// SCIM turns on the SCIM 2.0 service at /scim/v2 (package scim), by
	// which an IdP (Okta, Entra ID) provisions users and groups and
	// off-boards people. Off (404) while it names no client.
	SCIM SCIMConfig `json:"scim,omitzero"`

	dir string // directory of the config file
}

// AttestationConfig configures the TPM Attestation CA (package attestca).
type AttestationConfig struct {
	// Cert and Key are the Attestation CA's certificate and key (PEM): they
	// sign AK certificates, and only AK certificates under Cert are accepted
	// for device certificates (ACME device-attest-01).
	Cert string `json:"cert"`
	Key  string `json:"key"`
	// EKRoots is a PEM bundle of TPM manufacturer root (and intermediate)
	// certificates. When set, a device must present an EK certificate that
	// chains to one of them. When empty, EK certificates are not checked:
	// the EK registered in the inventory alone identifies the device.
	EKRoots string `json:"ekRoots,omitempty"`
	// SecretTTL is how long an attestation waits for its secret. Default 60s.
	SecretTTL conffile.Duration `json:"secretTTL"`
	// AKCertLifetime is the lifetime of AK certificates. Default 8760h (a
	// year): an AK certificate only says that a key is in a registered
	// device's TPM, and step's TPM tooling reuses its cached one for every
	// enrolment; the device's status is checked at every issuance anyway.
	AKCertLifetime conffile.Duration `json:"akCertLifetime"`
}

// DBConfig selects the store.
type DBConfig struct {
	// Type is "bbolt" (embedded, the default) or "postgresql".
	Type string `json:"type"`
	// DataSource is the bbolt file path, or a PostgreSQL connection string.
	DataSource string `json:"dataSource"`
	// Database is the PostgreSQL database name.
	Database string `json:"database,omitempty"`
	// MaxConns is the most connections to PostgreSQL one devid-ca opens
	// for its store (the KRL notification connection aside). Default 20:
	// mind the server's max_connections (100 by default) across replicas.
	MaxConns int `json:"maxConns,omitempty"`
}

// Lifetimes of issued certificates. Short, since renewal is automatic.
type Lifetimes struct {
	Host   conffile.Duration `json:"host"`   // SSH host certificates, default 24h
	User   conffile.Duration `json:"user"`   // SSH user certificates, default 16h
	Device conffile.Duration `json:"device"` // X.509 device certificates, default 24h
}

// SCIMConfig configures the SCIM 2.0 service.
type SCIMConfig struct {
	// Clients may use the service, each with its own bearer token. Two
	// entries let a token be rotated without a gap.
	Clients []SCIMClient `json:"clients,omitempty"`
	// LoginFrom says where a user's login (login:LOGIN principal) comes
	// from: "userName-localpart" (the default: the part of the userName
	// before @, in lower case), "userName" (all of it, in lower case),
	// "email-localpart", or an extension schema's attribute, as
	// URN:ATTRIBUTE (e.g.
	// urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber).
	LoginFrom string `json:"loginFrom,omitempty"`
}

// SCIMClient is a SCIM client: `devid-ca scim-token` makes the token and
// prints this entry.
type SCIMClient struct {
	// Name is the client's name: the audit trail's actor is scim:NAME.
	Name string `json:"name"`
	// TokenSHA256 is the SHA-256 of its bearer token, in hex. The token
	// itself is kept nowhere.
	TokenSHA256 string `json:"tokenSHA256"`
}

// LogConfig sets devid-ca's log.
type LogConfig struct {
	// Format is "text" (the default) or "json".
	Format string `json:"format,omitempty"`
	// Level is "debug", "info" (the default), "warn" or "error".
	Level string `json:"level,omitempty"`
}

// LimitsConfig bounds requests, so that no client, anonymous or not, can
// make the CA hold a large body in memory or keep a connection open by
// sending slowly.
type LimitsConfig struct {
	// MaxBody is the largest request body, in bytes, on every endpoint but
	// the admin API (whose limit, for imports, is adminapi.MaxBody). A larger
	// body is refused with 413 before it is read. Default 262144 (256 KiB).
	MaxBody int64 `json:"maxBody"`
	// BodyTimeout is how long a request's whole body may take to arrive; a
	// slower client gets 408 and its connection is closed. Default 30s.
	BodyTimeout conffile.Duration `json:"bodyTimeout"`
	// HeaderTimeout is how long the TLS handshake and a request's headers
	// may take. Default 10s.
	HeaderTimeout conffile.Duration `json:"headerTimeout"`
	// IdleTimeout is how long a kept-alive connection may wait for its next
	// request. Default 2m.
	IdleTimeout conffile.Duration `json:"idleTimeout"`
	// ImportMaxBytes and ImportMaxRows bound an import (an admin's POST
	// to /devid/v1/import/...), whose body is read as a stream, not held:
	// default 268435456 (256 MiB) and 500000 rows. Its body may take ten
	// times BodyTimeout to arrive.
	ImportMaxBytes int64 `json:"importMaxBytes,omitzero"`
	ImportMaxRows  int   `json:"importMaxRows,omitzero"`
}

// ConfigVersion implements conffile's version check.
func (c *Config) ConfigVersion() int { return c.Version }

// LoadConfig reads and checks a configuration file.
func LoadConfig(file string) (*Config, error) {
	var c Config
	if err := conffile.Load(file, &c, ConfigVersion); err != nil {
		return nil, fmt.Errorf("devid-ca config: %w", err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	c.dir = filepath.Dir(abs)
	c.setDefaults()
	if err := c.check(file); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.Address == "" {
		c.Address = ":8443"
	}
	if c.DB.Type == "" {
		c.DB.Type = "bbolt"
	}
	def := func(d *conffile.Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	def(&c.Lifetimes.Host, 24*time.Hour)
	def(&c.Lifetimes.User, 16*time.Hour)
	def(&c.Lifetimes.Device, 24*time.Hour)
	def(&c.Attestation.SecretTTL, 60*time.Second)
	def(&c.Attestation.AKCertLifetime, attestca.DefaultAKCertLifetime)
	def(&c.Limits.BodyTimeout, 30*time.Second)
	def(&c.Limits.HeaderTimeout, 10*time.Second)
	def(&c.Limits.IdleTimeout, 2*time.Minute)
	if c.Limits.MaxBody == 0 {
		c.Limits.MaxBody = 256 << 10
	}
}

func (c *Config) check(file string) error {
	req := map[string]string{
		"root": c.Root, "intermediate": c.Intermediate, "intermediateKey": c.IntermediateKey,
		"sshHostKey": c.SSHHostKey, "sshUserKey": c.SSHUserKey, "adminRoot": c.AdminRoot,
		"db.dataSource": c.DB.DataSource, "attestation.cert": c.Attestation.Cert, "attestation.key": c.Attestation.Key,
	}
	for _, k := range []string{"root", "intermediate", "intermediateKey", "sshHostKey", "sshUserKey", "adminRoot", "attestation.cert", "attestation.key", "db.dataSource"} {
		if req[k] == "" {
			return fmt.Errorf("devid-ca config: %s: %s is required", file, k)
		}
	}
	if len(c.DNSNames) == 0 {
		return fmt.Errorf("devid-ca config: %s: dnsNames needs at least one name", file)
	}
	for _, n := range c.DNSNames {
		if err := CheckDNSName(n); err != nil {
			return fmt.Errorf("devid-ca config: %s: dnsNames: %w", file, err)
		}
	}
	if err := CheckAddress(c.Address); err != nil {
		return fmt.Errorf("devid-ca config: %s: %w", file, err)
	}
	if err := checkMetricsAddress(c.MetricsAddress, c.Address); err != nil {
		return fmt.Errorf("devid-ca config: %s: %w", file, err)
	}
	switch c.DB.Type {
	case "bbolt", "postgresql":
	default:
		return fmt.Errorf("devid-ca config: %s: db.type %q: want bbolt or postgresql", file, c.DB.Type)
	}
	if c.DB.MaxConns < 0 {
		return fmt.Errorf("devid-ca config: %s: db.maxConns %d: want a positive number", file, c.DB.MaxConns)
	}
	if c.Limits.MaxBody < 0 {
		return fmt.Errorf("devid-ca config: %s: limits.maxBody %d: want a positive number of bytes", file, c.Limits.MaxBody)
	}
	if c.Limits.ImportMaxBytes < 0 || c.Limits.ImportMaxRows < 0 {
		return fmt.Errorf("devid-ca config: %s: limits.importMaxBytes %d, importMaxRows %d: want positive numbers (0: the defaults)", file, c.Limits.ImportMaxBytes, c.Limits.ImportMaxRows)
	}
	if err := c.SCIM.check(); err != nil {
		return fmt.Errorf("devid-ca config: %s: %w", file, err)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("devid-ca config: %s: log.format %q: want text or json", file, c.Log.Format)
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("devid-ca config: %s: log.level %q: want debug, info, warn or error", file, c.Log.Level)
	}
	return nil
}

// path resolves a path from the config file.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.DB.Type == "postgresql" && p == c.DB.DataSource {
		return p
	}
	return filepath.Join(c.dir, p)
}
