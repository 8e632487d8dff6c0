package devidcli

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
)

func bootstrapCmd() *command.Command {
	var caURL, fp, adminCert, adminKey string
	var force bool
	return &command.Command{
		Name:    "bootstrap",
		Summary: "fetch the CA's root certificate, check it against a fingerprint, and pin it (as step ca bootstrap); check the admin certificate with the CA",
		Usage:   "--ca-url URL --fingerprint SHA256 [--admin-cert FILE --admin-key FILE] [--force]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&caURL, "ca-url", "", "CA URL, https://host:port (required)")
			fs.StringVar(&fp, "fingerprint", "", "SHA-256 fingerprint of the root certificate, hex, as devid-ca init printed it (required)")
			fs.StringVar(&adminCert, "admin-cert", "", "admin client certificate `file` to use from now on; checked with the CA before anything is written")
			fs.StringVar(&adminKey, "admin-key", "", "admin client key `file` to use from now on")
			fs.BoolVar(&force, "force", false, "replace an existing configuration")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if caURL == "" || fp == "" {
				return command.Usagef("--ca-url and --fingerprint are required")
			}
			if (adminCert == "") != (adminKey == "") {
				return command.Usagef("--admin-cert and --admin-key go together")
			}
			path, err := configPath(env)
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("%s exists: pass --force to replace it", path)
			}
			root, err := fetchRoot(caURL, fp)
			if err != nil {
				return err
			}
			admin := ""
			if adminCert != "" {
				// Before anything is written: a pair that does not load, or
				// that the CA refuses, would only fail the next command.
				if admin, err = checkAdmin(caURL, root, adminCert, adminKey); err != nil {
					return fmt.Errorf("bootstrap: %w; nothing written", err)
				}
			}
			dir := filepath.Dir(path)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			rootFile := filepath.Join(dir, "root_ca.crt")
			if err := atomicfile.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o644); err != nil {
				return err
			}
			abs := func(p string) string {
				if p == "" {
					return ""
				}
				a, err := filepath.Abs(p)
				if err != nil {
					return p
				}
				return a
			}
			cfg := clientConfig{Version: 1, CAURL: strings.TrimRight(caURL, "/"), Root: rootFile, AdminCert: abs(adminCert), AdminKey: abs(adminKey)}
			b, _ := json.MarshalIndent(cfg, "", "  ")
			if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "The root certificate has been saved in %s.\nThe configuration has been saved in %s.\n", rootFile, path)
			if admin != "" {
				fmt.Fprintf(env.Stdout, "The CA knows this certificate as admin %q.\n", admin)
			}
			return nil
		},
	}
}

// checkAdmin loads an admin certificate and its key, checks that they are
// a pair, and asks the CA (trusted through root) who it is, with it. It
// returns the admin name the CA sees.
func checkAdmin(caURL string, root *x509.Certificate, certFile, keyFile string) (string, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return "", fmt.Errorf("admin certificate %s and key %s: %w", certFile, keyFile, err)
	}
	leaf := kp.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(kp.Certificate[0]); err != nil {
			return "", fmt.Errorf("admin certificate %s: %w", certFile, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	// HTTP/1.1 only: over HTTP/2 the CA's TLS alert reaches the caller as
	// "client conn could not be established", and a refusal could not be
	// told from a network failure.
	tc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	refused := func(why any) error {
		return fmt.Errorf("the CA at %s refuses admin certificate %s (CN %s, issued by %q): it is not issued by this CA's admin CA, or has expired (%v)",
			strings.TrimRight(caURL, "/"), certFile, leaf.Subject.CommonName, leaf.Issuer.CommonName, why)
	}
	resp, err := hc.Get(strings.TrimRight(caURL, "/") + adminapi.Prefix + "whoami")
	if err != nil {
		// A client certificate that does not chain to the CA's admin CA
		// ends the TLS handshake: an alert, or a reset or broken pipe.
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "remote error" || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return "", refused(err)
		}
		return "", fmt.Errorf("asking the CA who admin certificate %s is: %w", certFile, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("asking the CA who admin certificate %s is: %w", certFile, err)
	}
	switch {
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return "", refused(fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body))))
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("asking the CA who admin certificate %s is: %s: %s", certFile, resp.Status, strings.TrimSpace(string(body)))
	}
	var who adminapi.WhoAmI
	if err := json.Unmarshal(body, &who); err != nil || who.Admin == "" {
		return "", fmt.Errorf("asking the CA who admin certificate %s is: no admin name in the answer %q", certFile, body)
	}
	return who.Admin, nil
}

// fetchRoot gets the root certificate whose SHA-256 fingerprint is fp from
// the CA, and checks that the CA's TLS certificate chains to it. Nothing is
// trusted before the fingerprint matches.
func fetchRoot(caURL, fp string) (*x509.Certificate, error) {
	fp = strings.ToLower(strings.ReplaceAll(fp, ":", ""))
	if want, err := hex.DecodeString(fp); err != nil || len(want) != sha256.Size {
		return nil, command.Usagef("--fingerprint %q: want 64 hex digits (SHA-256)", fp)
	}
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, command.Usagef("--ca-url %q: want https://host[:port]", caURL)
	}
	var root *x509.Certificate
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The root is not known yet: verify the chain below, once the
		// fingerprint has picked the root.
		InsecureSkipVerify: true,
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Get(strings.TrimRight(caURL, "/") + "/root/" + fp)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bootstrap: %s: %s: %s", resp.Request.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	var rr struct {
		CA string `json:"ca"`
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, fmt.Errorf("bootstrap: decoding the CA's answer: %w", err)
	}
	block, _ := pem.Decode([]byte(rr.CA))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("bootstrap: the CA answered without a certificate")
	}
	sum := sha256.Sum256(block.Bytes)
	if got := hex.EncodeToString(sum[:]); got != fp {
		return nil, fmt.Errorf("bootstrap: the CA's root has fingerprint %s, not %s: not trusting it", got, fp)
	}
	if root, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("bootstrap: root certificate: %w", err)
	}
	// The server we spoke to must hold a certificate under that root.
	state := resp.TLS
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil, errors.New("bootstrap: no TLS certificate from the CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: u.Hostname()}); err != nil {
		return nil, fmt.Errorf("bootstrap: the CA's TLS certificate does not verify under that root: %w", err)
	}
	return root, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// auditChange summarises what an audit entry changed.
func auditChange(e adminapi.AuditEntry) string {
	if e.Action == "cert.revoke" {
		return revokeChange(e)
	}
	if e.Action == "device.token" {
		return tokenChange(e)
	}
	if e.Action == "store.backup" {
		var b struct{ Bytes int64 }
		if json.Unmarshal(e.After, &b) != nil {
			return "?"
		}
		return fmt.Sprintf("copied, %d bytes", b.Bytes)
	}
	if len(e.Before) == 0 {
		return "created"
	}
	if len(e.After) == 0 {
		if e.Reason != "" {
			return fmt.Sprintf("deleted (%s)", e.Reason)
		}
		return "deleted"
	}
	var before, after map[string]any
	if json.Unmarshal(e.Before, &before) != nil || json.Unmarshal(e.After, &after) != nil {
		return "?"
	}
	skip := []string{"updated", "statusChanged", "statusReason", "ekPublic", "disabledBy"}
	var keys []string
	for _, m := range []map[string]any{before, after} {
		for k := range m {
			if !slices.Contains(skip, k) && !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		b, a := before[k], after[k]
		// A flag left out (omitempty) is false.
		if _, ok := a.(bool); ok && b == nil {
			b = false
		}
		if _, ok := b.(bool); ok && a == nil {
			a = false
		}
		bj, _ := json.Marshal(b)
		aj, _ := json.Marshal(a)
		switch {
		case bytes.Equal(bj, aj):
		case k == "ekCert" && string(bj) == "null":
			parts = append(parts, "ekCert set")
		case k == "ekCert":
			parts = append(parts, "ekCert replaced")
		default:
			parts = append(parts, fmt.Sprintf("%s %s → %s", k, bj, aj))
		}
	}
	s := strings.Join(parts, ", ")
	if e.Reason != "" {
		s += fmt.Sprintf(" (%s)", e.Reason)
	}
	return s
}
