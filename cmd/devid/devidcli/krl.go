package devidcli

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/devid-ssh/devid/adminapi"

	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/krl"
	"golang.org/x/crypto/ssh"
)

func krlCmd() *command.Command {
	return &command.Command{
		Name:    "krl",
		Summary: "build, inspect and query OpenSSH key revocation lists (offline)",
		Sub:     []*command.Command{krlBuildCmd(), krlInspectCmd(), krlQueryCmd()},
	}
}

func krlBuildCmd() *command.Command {
	var caFile, out, comment string
	var version uint64
	var update bool
	return &command.Command{
		Name:    "build",
		Summary: "write a KRL from ssh-keygen -k revocation specs, one OpenSSH always loads",
		Usage:   "--ca CA.pub|none -o OUT [--update] [--krl-version N] [--comment TEXT] SPEC...",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&caFile, "ca", "", "CA public key `file` that serial: and id: lines revoke under, or none for any CA (ssh-keygen -s)")
			fs.StringVar(&out, "o", "", "the KRL `file` to write (required)")
			fs.StringVar(&out, "out", "", "same as -o")
			fs.BoolVar(&update, "update", false, "add to the existing KRL instead of replacing it (ssh-keygen -u)")
			fs.Uint64Var(&version, "krl-version", 0, "KRL version to record (ssh-keygen -z; 0 keeps the current)")
			fs.StringVar(&comment, "comment", "", "comment to record")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, -1, "one or more spec files (- for standard input)"); err != nil {
				return err
			}
			if out == "" {
				return command.Usagef("-o is required")
			}
			opts := krl.SpecOptions{AnyCA: caFile == "none"}
			if caFile != "" && caFile != "none" {
				ca, err := readPublicKey(caFile)
				if err != nil {
					return fmt.Errorf("CA key: %w", err)
				}
				if _, ok := ca.(*ssh.Certificate); ok {
					return fmt.Errorf("CA key %s is a certificate", caFile)
				}
				opts.CA = ca
			}
			k := new(krl.KRL)
			if update {
				b, err := os.ReadFile(out)
				if err != nil {
					return err
				}
				if k, err = krl.Parse(b); err != nil {
					return fmt.Errorf("%s: %w", out, err)
				}
				k.Signatures = nil
			}
			if version != 0 {
				k.Version = version
			}
			if comment != "" {
				k.Comment = comment
			}
			for _, name := range args {
				if err := addSpec(env, k, name, opts); err != nil {
					return err
				}
			}
			k.Generated = time.Now().UTC().Truncate(time.Second)
			b, err := k.Marshal()
			if err != nil {
				return err
			}
			// What Parse accepts, OpenSSH 9.2 loads: check before replacing
			// a KRL that every sshd reading it depends on.
			if _, err := krl.Parse(b); err != nil {
				return fmt.Errorf("built an unloadable KRL, not writing it: %w", err)
			}
			if err := atomicfile.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			var serials uint64
			var ranges, ids int
			for _, s := range k.Certs {
				serials += s.Serials.Count()
				ranges += s.Serials.Len()
				ids += len(s.KeyIDs)
			}
			fmt.Fprintf(env.Stdout, "wrote %s: %d bytes; %d serials in %d ranges and %d key IDs under %d CA sections, %d keys, %d fingerprints\n",
				out, len(b), serials, ranges, ids, len(k.Certs), len(k.RevokedKeys), len(k.SHA1)+len(k.SHA256))
			return nil
		},
	}
}

func addSpec(env *command.Env, k *krl.KRL, name string, opts krl.SpecOptions) error {
	var r io.Reader = env.Stdin
	opts.Name = "(standard input)"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r, opts.Name = f, name
	}
	return k.AddSpec(r, opts)
}

// readPublicKey reads the first key or certificate in an OpenSSH public key
// file, and its comment; if there is none, from FILE.pub (as ssh-keygen
// does).
func readPublicKey(name string) (ssh.PublicKey, error) {
	key, _, err := readPublicKeyComment(name)
	return key, err
}

func readPublicKeyComment(name string) (ssh.PublicKey, string, error) {
	b, err := os.ReadFile(name)
	if err == nil {
		key, comment, _, _, perr := ssh.ParseAuthorizedKey(b)
		if perr == nil {
			return key, comment, nil
		}
		err = fmt.Errorf("%s: %w", name, perr)
	}
	if !strings.HasSuffix(name, ".pub") {
		if key, comment, perr := readPublicKeyComment(name + ".pub"); perr == nil {
			return key, comment, nil
		}
	}
	return nil, "", err
}

func krlInspectCmd() *command.Command {
	var asJSON bool
	return &command.Command{
		Name:    "inspect",
		Summary: "show what a KRL (or a RevokedKeys list of keys) revokes, or why OpenSSH would refuse it",
		Usage:   "FILE [--json]",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 1, 1, "one KRL file (- for standard input)"); err != nil {
				return err
			}
			b, err := readInput(env, args[0])
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(b, []byte(krlMagic)) {
				return inspectKeyList(env, args[0], b, asJSON)
			}
			k, err := krl.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w; sshd given it as RevokedKeys refuses every public-key login", args[0], err)
			}
			rep := inspect(k, len(b))
			if asJSON {
				return writeJSON(env, rep)
			}
			printInspect(env.Stdout, rep)
			return nil
		},
	}
}

// krlMagic starts every binary KRL (PROTOCOL.krl).
const krlMagic = "SSHKRL\n\x00"

// inspectKeyList reports on a RevokedKeys file without the KRL magic, as
// sshd reads it (OpenSSH's sshkey_check_revoked): a list of public keys,
// one a line, blank lines and lines starting with # skipped (after spaces
// and tabs). A listed key is revoked, with its certificates and those it
// signed as a CA; any other line makes sshd refuse every public-key login.
func inspectKeyList(env *command.Env, name string, b []byte, asJSON bool) error {
	var keys []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimLeft(line, " \t")
		if line == "" || line[0] == '#' || line[0] == 0 {
			continue
		}
		key, err := parseKeyLine(line)
		if err != nil {
			return fmt.Errorf("%s: not a binary KRL, so sshd reads it as a list of public keys; line %d is not a public key, so sshd refuses every public-key login (%v)", name, i+1, err)
		}
		keys = append(keys, authorizedKeyLine(key))
	}
	if asJSON {
		return writeJSON(env, &krlReport{Format: "keys", Size: len(b), Certificates: []krlCertReport{}, Keys: append([]string{}, keys...), SHA1: []string{}, SHA256: []string{}})
	}
	w := env.Stdout
	fmt.Fprintf(w, "# %s: not a binary KRL (no SSHKRL magic), so sshd reads it as a list of public keys\n", name)
	if len(keys) == 0 {
		fmt.Fprintf(w, "# %d bytes; it lists no keys, so sshd revokes nothing: every login otherwise allowed gets in\n", len(b))
		return nil
	}
	fmt.Fprintf(w, "# %d bytes; sshd revokes these %d keys (and certificates of them or signed by them)\n", len(b), len(keys))
	printLines(w, "keys", "key: ", keys)
	return nil
}

// parseKeyLine parses "TYPE BASE64 [COMMENT]", as sshd's sshkey_read does:
// no authorized_keys options.
func parseKeyLine(line string) (ssh.PublicKey, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return nil, fmt.Errorf("want TYPE BASE64 [COMMENT]")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, fmt.Errorf("base64: %v", err)
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, err
	}
	if key.Type() != f[0] {
		return nil, fmt.Errorf("key type %s, but the line says %s", key.Type(), f[0])
	}
	return key, nil
}

// krlReport is inspect's output (and its JSON).
type krlReport struct {
	Format       string          `json:"format"` // "krl", or "keys" for a list of public keys
	Version      uint64          `json:"version"`
	Generated    *time.Time      `json:"generated,omitempty"`
	Comment      string          `json:"comment"`
	Size         int             `json:"size"`
	Certificates []krlCertReport `json:"certificates"`
	Keys         []string        `json:"keys"`   // authorized_keys format
	SHA1         []string        `json:"sha1"`   // hex
	SHA256       []string        `json:"sha256"` // SHA256:base64, as ssh-keygen -l prints
	Signatures   []string        `json:"signatures,omitempty"`
}

type krlCertReport struct {
	CA            string        `json:"ca"` // authorized_keys format; empty: any CA
	CAFingerprint string        `json:"caFingerprint,omitempty"`
	SerialCount   uint64        `json:"serialCount"`
	Serials       []serialRange `json:"serials"`
	KeyIDs        []string      `json:"keyIds"`
}

func inspect(k *krl.KRL, size int) *krlReport {
	rep := &krlReport{Format: "krl", Version: k.Version, Comment: k.Comment, Size: size,
		Certificates: []krlCertReport{}, Keys: []string{}, SHA1: []string{}, SHA256: []string{}}
	if !k.Generated.IsZero() {
		rep.Generated = &k.Generated
	}
	for _, s := range k.Certs {
		c := krlCertReport{SerialCount: s.Serials.Count(), Serials: []serialRange{}, KeyIDs: s.KeyIDs}
		if s.CA != nil {
			c.CA, c.CAFingerprint = authorizedKeyLine(s.CA), ssh.FingerprintSHA256(s.CA)
		}
		for r := range s.Serials.Ranges() {
			c.Serials = append(c.Serials, serialRange{adminapi.Serial(r.First), adminapi.Serial(r.Last)})
		}
		if c.KeyIDs == nil {
			c.KeyIDs = []string{}
		}
		rep.Certificates = append(rep.Certificates, c)
	}
	for _, key := range k.RevokedKeys {
		rep.Keys = append(rep.Keys, authorizedKeyLine(key))
	}
	for _, h := range k.SHA1 {
		rep.SHA1 = append(rep.SHA1, hex.EncodeToString(h[:]))
	}
	for _, h := range k.SHA256 {
		rep.SHA256 = append(rep.SHA256, "SHA256:"+base64.RawStdEncoding.EncodeToString(h[:]))
	}
	for _, s := range k.Signatures {
		rep.Signatures = append(rep.Signatures, authorizedKeyLine(s.Key))
	}
	return rep
}

// serialRange is a krl.SerialRange with its serials as JSON strings.
type serialRange struct {
	First adminapi.Serial `json:"first"`
	Last  adminapi.Serial `json:"last"`
}

func (r serialRange) String() string {
	return krl.SerialRange{First: uint64(r.First), Last: uint64(r.Last)}.String()
}

func authorizedKeyLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// printInspect prints the report as a revocation spec (lines devid krl
// build and ssh-keygen -k read back), its other facts as comments.
func printInspect(w io.Writer, r *krlReport) {
	gen := "never"
	if r.Generated != nil {
		gen = r.Generated.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "# KRL version %d, generated %s, comment %q\n", r.Version, gen, r.Comment)
	if len(r.Signatures) == 0 {
		fmt.Fprintf(w, "# %d bytes; OpenSSH 9.2 and later load it\n", r.Size)
	} else {
		fmt.Fprintf(w, "# %d bytes; signed: OpenSSH 9.2 loads it only if the signature verifies (not checked here), 9.4 and later refuse it\n", r.Size)
	}
	for _, c := range r.Certificates {
		ca := "any CA (wildcard)"
		if c.CA != "" {
			ca = "CA " + c.CAFingerprint + " " + c.CA
		}
		fmt.Fprintf(w, "\n# %s: %d serials in %d ranges, %d key IDs\n", ca, c.SerialCount, len(c.Serials), len(c.KeyIDs))
		for _, s := range c.Serials {
			fmt.Fprintf(w, "serial: %s\n", s)
		}
		for _, id := range c.KeyIDs {
			fmt.Fprintf(w, "id: %s\n", id)
		}
	}
	printLines(w, "keys", "key: ", r.Keys)
	printLines(w, "keys by SHA1 fingerprint (a spec's sha1: lines take keys, not fingerprints)", "# sha1 ", r.SHA1)
	printLines(w, "keys by SHA256 fingerprint", "hash: ", r.SHA256)
	for _, s := range r.Signatures {
		fmt.Fprintf(w, "\n# signed by %s (not verified; OpenSSH 9.4 and later refuse signed KRLs)\n", s)
	}
}

// printLines prints a heading with the count, then prefix+item a line.
func printLines(w io.Writer, heading, prefix string, items []string) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(w, "\n# %d %s\n", len(items), heading)
	for _, it := range items {
		fmt.Fprintf(w, "%s%s\n", prefix, it)
	}
}

func krlQueryCmd() *command.Command {
	return &command.Command{
		Name:    "query",
		Summary: "say whether a KRL revokes keys or certificates; exit codes as ssh-keygen -Q",
		Usage:   "FILE KEY.pub...",
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 2, -1, "a KRL file and one or more public key or certificate files"); err != nil {
				return err
			}
			b, err := readInput(env, args[0])
			if err != nil {
				return &command.ExitCodeError{Code: 255, Err: err}
			}
			k, err := krl.Parse(b)
			if err != nil {
				return &command.ExitCodeError{Code: 255, Err: fmt.Errorf("%s: %w", args[0], err)}
			}
			revoked, failed := false, false
			for _, name := range args[1:] {
				key, comment, err := readPublicKeyComment(name)
				if err != nil {
					failed = true
					fmt.Fprintf(env.Stderr, "devid: %v\n", err)
					continue
				}
				if comment == "" {
					comment = name
				}
				verdict := "ok"
				if k.IsRevoked(key) {
					verdict, revoked = "REVOKED", true
				}
				fmt.Fprintf(env.Stdout, "%s (%s): %s\n", name, comment, verdict)
			}
			switch {
			case failed:
				return &command.ExitCodeError{Code: 255}
			case revoked:
				return &command.ExitCodeError{Code: 1}
			}
			return nil
		},
	}
}
