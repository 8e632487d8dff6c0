package devidcli

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/tpm"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

func enrollCmd() *command.Command {
	var c conn
	var tpmAddr, certType, principals, keyFile, tpmKeyFile, out string
	var tok enrolmentFlags
	var verbose bool
	return &command.Command{
		Name:    "enroll",
		Summary: "attest this machine's TPM to the CA and get an SSH certificate for a key in the TPM (by hand, for scripts; devid-hostd and devid-agent do this themselves)",
		Usage:   "--tpm-key FILE | --key FILE.pub  [--type host|user] [--principals N1,N2] [--tpm /dev/tpmrm0|unix:PATH|tcp:HOST:PORT] [--token-file FILE [--name NAME]] [--out FILE] [--json]",
		Flags: func(fs *flag.FlagSet) {
			c.flags(fs)
			fs.StringVar(&tpmAddr, "tpm", "/dev/tpmrm0", "the TPM: a device, unix:PATH or tcp:HOST:PORT (a swtpm)")
			fs.StringVar(&certType, "type", "host", "SSH certificate type: host (for a host device) or user (for a workstation)")
			fs.StringVar(&principals, "principals", "", "comma-separated host names and addresses for a host certificate, each one the inventory allows the device (default: none, and the CA gives the device's names from the inventory)")
			fs.StringVar(&tpmKeyFile, "tpm-key", "", "the TPM key `file` (TSS2 PRIVATE KEY) whose key to certify; made in the TPM if missing, its public key written to FILE.pub")
			fs.StringVar(&keyFile, "key", "", "instead of --tpm-key, an SSH public key `file` outside the TPM: signed only where the device's collection allows file keys")
			fs.StringVar(&out, "out", "", "write the SSH certificate to this `file`, in an existing directory (default: standard output)")
			fs.BoolVar(&verbose, "v", false, "log each step on standard error")
			tok.flags(fs)
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if (keyFile == "") == (tpmKeyFile == "") {
				return command.Usagef("give --tpm-key (a key in the TPM) or --key (a file key), one of them")
			}
			if certType != "host" && certType != "user" {
				return command.Usagef("--type %q: want host or user", certType)
			}
			if out != "" {
				// Before the CA issues anything: a certificate that cannot
				// be written would be lost.
				if err := checkDestination(out); err != nil {
					return fmt.Errorf("enroll: --out %s: %w", out, err)
				}
			}
			src, err := tok.source(certType)
			if err != nil {
				return err
			}
			req := enroll.Request{Type: certType}
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return err
				}
				if req.FileKey, _, _, _, err = ssh.ParseAuthorizedKey(b); err != nil {
					return fmt.Errorf("%s: %w", keyFile, err)
				}
			}
			if principals != "" {
				req.Principals = strings.Split(principals, ",")
			}
			caURL, roots, err := c.trust(env)
			if err != nil {
				return err
			}
			logOut := io.Discard
			if verbose {
				logOut = env.Stderr
			}
			log := slog.New(slog.NewTextHandler(logOut, nil))
			t, err := tpm.OpenAddress(tpmAddr, &tpm.Config{Logger: log})
			if err != nil {
				return err
			}
			defer t.Close()
			if tpmKeyFile != "" {
				key, created, err := t.LoadOrCreateKeyFile(tpmKeyFile, "devid enroll")
				if err != nil {
					return err
				}
				defer key.Close()
				pub, err := ssh.NewPublicKey(key.Public())
				if err != nil {
					return err
				}
				if err := atomicfile.WriteFile(tpmKeyFile+".pub", ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
					return err
				}
				if created {
					fmt.Fprintf(env.Stderr, "Made a new key in the TPM: %s (key file %s)\n", ssh.FingerprintSHA256(pub), tpmKeyFile)
				}
				req.Key = key
			}
			cl := enroll.New(caURL, roots, log)
			if src != nil {
				cl.SetEnrolment(src)
			}
			return runEnroll(env, cl, t, req, out, c.json)
		},
	}
}

func runEnroll(env *command.Env, cl *enroll.Client, t *tpm.TPM, req enroll.Request, out string, asJSON bool) error {
	certType := req.Type
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := cl.Enroll(ctx, t, req)
	if err != nil {
		return err
	}
	ak, dc, cert := res.AKCertificate, res.DeviceCertificate, res.SSHCertificate
	w := env.Stderr
	fmt.Fprintf(w, "Device ID:           %s\n", res.DeviceID)
	fmt.Fprintf(w, "AK certificate:      subject %q, issuer %q, until %s\n", ak.Subject.String(), ak.Issuer.CommonName, ak.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(w, "Device certificate:  subject %q, issuer %q, until %s (key in the TPM; kept in memory only)\n",
		dc.Subject.String(), dc.Issuer.CommonName, dc.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(w, "SSH %s certificate: key ID %q, serial %d, principals %s, until %s\n", certType, cert.KeyId, cert.Serial,
		strings.Join(cert.ValidPrincipals, ","), certTime(cert.ValidBefore).Format(time.RFC3339))
	fmt.Fprintf(w, "Enrolled in %s.\n", time.Since(start).Round(time.Millisecond))
	line := ssh.MarshalAuthorizedKey(cert)
	rep := enrollReport{DeviceID: res.DeviceID, AKCertificate: x509Report(ak), DeviceCertificate: x509Report(dc),
		SSHCertificate: sshCertReport{Type: certType, KeyID: cert.KeyId, Serial: strconv.FormatUint(cert.Serial, 10),
			Principals: cert.ValidPrincipals, ValidAfter: certTime(cert.ValidAfter), ValidBefore: certTime(cert.ValidBefore), File: out},
		Files: []string{}}
	if out == "" {
		if asJSON {
			rep.SSHCertificate.Certificate = strings.TrimSpace(string(line))
			return writeJSON(env, rep)
		}
		_, err = env.Stdout.Write(line)
		return err
	}
	if err := atomicfile.WriteFile(out, line, 0o644); err != nil {
		return err
	}
	if asJSON {
		rep.Files = append(rep.Files, out)
		return writeJSON(env, rep)
	}
	return nil
}

// enrollReport is what devid enroll --json prints. Serials are decimal
// strings (JSON numbers lose precision above 2^53 in many readers), times
// RFC 3339.
type enrollReport struct {
	DeviceID          string        `json:"deviceId"`
	AKCertificate     x509Summary   `json:"akCertificate"`
	DeviceCertificate x509Summary   `json:"deviceCertificate"`
	SSHCertificate    sshCertReport `json:"sshCertificate"`
	Files             []string      `json:"files"` // files written
}

type x509Summary struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"` // common name
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

type sshCertReport struct {
	Type        string    `json:"type"` // host or user
	KeyID       string    `json:"keyId"`
	Serial      string    `json:"serial"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"validAfter"`
	ValidBefore time.Time `json:"validBefore"`
	File        string    `json:"file,omitempty"`        // where it was written (--out)
	Certificate string    `json:"certificate,omitempty"` // the certificate itself, without --out
}

func x509Report(c *x509.Certificate) x509Summary {
	return x509Summary{Subject: c.Subject.String(), Issuer: c.Issuer.CommonName, Serial: c.SerialNumber.String(),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC()}
}

// certTime converts an SSH certificate time (seconds since the epoch).
func certTime(t uint64) time.Time {
	if t > math.MaxInt64 {
		t = math.MaxInt64
	}
	return time.Unix(int64(t), 0).UTC()
}

// checkDestination checks that a file can be written at path (atomically:
// a temporary file beside it, then a rename) without writing it.
func checkDestination(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist", dir)
	case err != nil && errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s is not a directory", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".devid-enroll-check-*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// trust returns the CA URL and pinned roots, from flags over the
// configuration; no admin certificate is needed.
func (c *conn) trust(env *command.Env) (string, *x509.CertPool, error) {
	cfg, path, err := loadConfig(env)
	if err != nil {
		return "", nil, err
	}
	caURL, root := pick(c.caURL, cfg.CAURL), pick(c.root, cfg.Root)
	if caURL == "" || root == "" {
		return "", nil, fmt.Errorf("no CA configured: run devid bootstrap --ca-url URL --fingerprint FP, or pass --ca-url and --root (configuration: %s)", path)
	}
	certs, err := pemutil.ReadCertificateBundle(root)
	if err != nil {
		return "", nil, fmt.Errorf("root certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, rc := range certs {
		pool.AddCert(rc)
	}
	if len(certs) == 0 {
		return "", nil, errors.New("root certificate: none found")
	}
	return caURL, pool, nil
}
