package caserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// InitOptions says how to create a new CA.
type InitOptions struct {
	Dir      string   // created if missing; must not hold a CA already
	Name     string   // CA name, in certificate subjects; default "devid"
	DNSNames []string // names in the CA URL; at least one
	Address  string   // listen address; default ":8443"
	// MetricsAddress is the metrics listener's address (Config.MetricsAddress);
	// empty for none.
	MetricsAddress string
	AdminName      string    // the first admin; default "admin"
	Now            time.Time // the clock
}

// InitResult says what Init created.
type InitResult struct {
	Config          string // path of the config file
	RootFingerprint string // SHA-256 of the root certificate, hex
	AdminCert       string
	AdminKey        string
}

// File names Init uses below the CA directory.
const (
	ConfigFile = "devid-ca.json"
)

const (
	caLifetime    = 10 * 365 * 24 * time.Hour
	adminLifetime = 365 * 24 * time.Hour
)

// Init creates a CA in opts.Dir: an X.509 root and intermediate, SSH host
// and user CA keys, an admin CA and a first admin certificate, and the config
// file. Private keys are written with mode 0600 under secrets/ (0700); the
// root key is not needed to serve and belongs offline. Init refuses to touch
// a directory that already has a config file.
func Init(opts InitOptions) (*InitResult, error) {
	if opts.Name == "" {
		opts.Name = "devid"
	}
	if opts.AdminName == "" {
		opts.AdminName = "admin"
	}
	if opts.Address == "" {
		opts.Address = ":8443"
	}
	if len(opts.DNSNames) == 0 {
		return nil, errors.New("devid-ca init: at least one DNS name or address is needed")
	}
	if err := CheckAddress(opts.Address); err != nil {
		return nil, fmt.Errorf("devid-ca init: --%w", err)
	}
	if err := checkMetricsAddress(opts.MetricsAddress, opts.Address); err != nil {
		return nil, fmt.Errorf("devid-ca init: --metrics-address: %w", err)
	}
	for _, n := range opts.DNSNames {
		if err := CheckDNSName(n); err != nil {
			return nil, fmt.Errorf("devid-ca init: --dns %w", err)
		}
	}
	dir := opts.Dir
	cfgPath := filepath.Join(dir, ConfigFile)
	if _, err := os.Stat(cfgPath); err == nil {
		return nil, fmt.Errorf("devid-ca init: %s already exists: refusing to overwrite a CA", cfgPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("devid-ca init: %w", err)
	}
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"", 0o755}, {"certs", 0o755}, {"secrets", 0o700}, {"admin", 0o700}, {"db", 0o700}} {
		if err := os.MkdirAll(filepath.Join(dir, d.name), d.mode); err != nil {
			return nil, fmt.Errorf("devid-ca init: %w", err)
		}
	}
	w := &pkiWriter{dir: dir, now: opts.Now}

	rootKey, root := w.ca(opts.Name+" Root CA", nil, nil, 1)
	intKey, intermediate := w.ca(opts.Name+" Intermediate CA", root, rootKey, 0)
	adminKey, adminCA := w.ca(opts.Name+" Admin CA", nil, nil, 0)
	attKey, attCA := w.ca(opts.Name+" TPM Attestation CA", nil, nil, 0)
	w.key("secrets/attestation_ca.key", attKey)
	w.cert("certs/attestation_ca.crt", attCA)
	w.key("secrets/root_ca.key", rootKey)
	w.key("secrets/intermediate_ca.key", intKey)
	w.key("secrets/admin_ca.key", adminKey)
	w.cert("certs/root_ca.crt", root)
	w.cert("certs/intermediate_ca.crt", intermediate)
	w.cert("certs/admin_ca.crt", adminCA)
	for _, kind := range []string{"host", "user"} {
		k := w.newKey()
		w.key("secrets/ssh_"+kind+"_ca.key", k)
		if w.err == nil {
			pub, err := ssh.NewPublicKey(k.Public())
			w.fail(err)
			if err == nil {
				w.write("certs/ssh_"+kind+"_ca.pub", ssh.MarshalAuthorizedKey(pub), 0o644)
			}
		}
	}
	if w.err != nil {
		return nil, fmt.Errorf("devid-ca init: %w", w.err)
	}
	certPEM, keyPEM, err := IssueAdmin(adminCA, adminKey, opts.AdminName, adminLifetime, opts.Now)
	if err != nil {
		return nil, err
	}
	w.write("admin/"+opts.AdminName+".crt", certPEM, 0o644)
	w.write("admin/"+opts.AdminName+".key", keyPEM, 0o600)

	cfg := Config{
		Version: ConfigVersion, Address: opts.Address, MetricsAddress: opts.MetricsAddress, DNSNames: opts.DNSNames,
		Root: "certs/root_ca.crt", Intermediate: "certs/intermediate_ca.crt", IntermediateKey: "secrets/intermediate_ca.key",
		SSHHostKey: "secrets/ssh_host_ca.key", SSHUserKey: "secrets/ssh_user_ca.key", AdminRoot: "certs/admin_ca.crt",
		DB:          DBConfig{Type: "bbolt", DataSource: "db/devid.db"},
		Attestation: AttestationConfig{Cert: "certs/attestation_ca.crt", Key: "secrets/attestation_ca.key"},
	}
	cfg.setDefaults()
	b, err := json.MarshalIndent(cfg, "", "  ")
	w.fail(err)
	w.write(ConfigFile, append(b, '\n'), 0o644)
	if w.err != nil {
		return nil, fmt.Errorf("devid-ca init: %w", w.err)
	}
	return &InitResult{
		Config:          cfgPath,
		RootFingerprint: Fingerprint(root),
		AdminCert:       filepath.Join(dir, "admin", opts.AdminName+".crt"),
		AdminKey:        filepath.Join(dir, "admin", opts.AdminName+".key"),
	}, nil
}

// Fingerprint is the SHA-256 fingerprint of a certificate, hex: the value
// `devid bootstrap --fingerprint` (and `step ca bootstrap`) pins.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// IssueAdmin issues an admin client certificate for name, signed by the
// admin CA. It returns the certificate and its private key, PEM.
func IssueAdmin(adminCA *x509.Certificate, adminKey crypto.Signer, name string, lifetime time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if name == "" {
		return nil, nil, errors.New("devid-ca: admin name is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, adminCA, key.Public(), adminKey)
	if err != nil {
		return nil, nil, fmt.Errorf("devid-ca: issue admin certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// pkiWriter creates keys and certificates, remembering the first error.
type pkiWriter struct {
	dir string
	now time.Time
	err error
}

func (w *pkiWriter) fail(err error) {
	if w.err == nil && err != nil {
		w.err = err
	}
}

func (w *pkiWriter) newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.fail(err)
	return k
}

// ca creates a CA certificate, self-signed when parent is nil.
func (w *pkiWriter) ca(cn string, parent *x509.Certificate, parentKey crypto.Signer, maxPathLen int) (*ecdsa.PrivateKey, *x509.Certificate) {
	key := w.newKey()
	if w.err != nil {
		return nil, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             w.now.Add(-time.Minute),
		NotAfter:              w.now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	w.fail(err)
	if err != nil {
		return nil, nil
	}
	c, err := x509.ParseCertificate(der)
	w.fail(err)
	return key, c
}

func (w *pkiWriter) key(name string, k *ecdsa.PrivateKey) {
	if w.err != nil {
		return
	}
	b, err := x509.MarshalECPrivateKey(k)
	w.fail(err)
	w.write(name, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600)
}

func (w *pkiWriter) cert(name string, c *x509.Certificate) {
	if w.err != nil {
		return
	}
	w.write(name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
}

func (w *pkiWriter) write(name string, data []byte, perm os.FileMode) {
	if w.err != nil {
		return
	}
	w.fail(atomicfile.WriteFile(filepath.Join(w.dir, name), data, perm))
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}
