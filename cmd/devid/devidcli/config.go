package devidcli

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/internal/conffile"
)

// clientConfig is the devid CLI's configuration, written by bootstrap.
type clientConfig struct {
	Version   int    `json:"version"`
	CAURL     string `json:"caUrl"`               // https://host:port
	Root      string `json:"root"`                // pinned root certificate (PEM)
	AdminCert string `json:"adminCert,omitempty"` // admin client certificate (PEM)
	AdminKey  string `json:"adminKey,omitempty"`  // its private key (PEM)
}

func (c *clientConfig) ConfigVersion() int { return c.Version }

// configPath is $DEVID_CONFIG, or config.json in $XDG_CONFIG_HOME/devid
// (~/.config/devid).
func configPath(env *command.Env) (string, error) {
	if p := env.Getenv("DEVID_CONFIG"); p != "" {
		return p, nil
	}
	base := env.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home := env.Getenv("HOME")
		if home == "" {
			return "", errors.New("cannot find the configuration: set DEVID_CONFIG or HOME")
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "devid", "config.json"), nil
}

// conn holds the flags every admin API command takes.
type conn struct {
	caURL, root, adminCert, adminKey string
	json                             bool
}

func (c *conn) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.caURL, "ca-url", "", "CA URL (default: from the configuration written by devid bootstrap)")
	fs.StringVar(&c.root, "root", "", "pinned root certificate `file` (default: from the configuration)")
	fs.StringVar(&c.adminCert, "admin-cert", "", "admin client certificate `file` (default: from the configuration)")
	fs.StringVar(&c.adminKey, "admin-key", "", "admin client key `file` (default: from the configuration)")
	fs.BoolVar(&c.json, "json", false, "print JSON instead of text")
}

func loadConfig(env *command.Env) (*clientConfig, string, error) {
	var cfg clientConfig
	path, err := configPath(env)
	if err != nil {
		return nil, "", err
	}
	if err := conffile.Load(path, &cfg, 1); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, path, fmt.Errorf("configuration: %w", err)
	}
	return &cfg, path, nil
}

func pick(flag, conf string) string {
	if flag != "" {
		return flag
	}
	return conf
}

// client builds the admin API client from flags over the configuration file.
func (c *conn) client(env *command.Env) (*adminapi.Client, error) {
	caURL, pool, err := c.trust(env)
	if err != nil {
		return nil, err
	}
	cfg, _, err := loadConfig(env)
	if err != nil {
		return nil, err
	}
	certFile, keyFile := pick(c.adminCert, cfg.AdminCert), pick(c.adminKey, cfg.AdminKey)
	var cert *tls.Certificate
	switch {
	case certFile != "" && keyFile != "":
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("admin certificate: %w", err)
		}
		cert = &kp
	case certFile != "" || keyFile != "":
		return nil, errors.New("admin certificate and key go together: give both --admin-cert and --admin-key")
	}
	return adminapi.NewClient(caURL, pool, cert)
}

func writeJSON(env *command.Env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}

// readInput reads a file, or standard input for "-".
// openInput opens a file to send as it is read (- for standard input).
func openInput(env *command.Env, name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(env.Stdin), nil
	}
	return os.Open(name)
}

func readInput(env *command.Env, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(env.Stdin)
	}
	return os.ReadFile(name)
}
