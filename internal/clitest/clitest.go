package clitest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/devid-ssh/devid/internal/command"

	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/rogpeppe/go-internal/testscript"
)

// Params returns the testscript parameters of devid's script tests: the
// scripts in dir, and the commands below. The test's TestMain registers
// the mains the scripts exec (RequireExplicitExec).
func Params(dir string) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("DEVID_CONFIG", env.WorkDir+"/.config/devid/config.json")
			// A race-detector build sleeps a second at exit (GORACE's
			// atexit_sleep_ms) to let late reports out; a script's commands
			// are the test binary run again, each to its end, so the sleep
			// is pure wait. Races are still reported, with exit status 66,
			// which fails the script.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			env.Values[tKey{}] = env.T()
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"freeport":    freeport,
			"waitca":      waitCA,
			"genek":       genEK,
			"fingerprint": fingerprint,
			"stdout2env":  stdoutToEnv,
			"subst":       subst,
			"needtools":   needTools,
			"swtpm":       swtpmServe,
			"pgdb":        pgDatabase,
		},
	}
}

// Main returns what testscript.Main registers for a command whose code is
// main: os.Exit(main(arguments, the process's environment)).
func Main(main func([]string, *command.Env) int) func() {
	return func() { os.Exit(main(os.Args[1:], command.OSEnv())) }
}

// freeport VAR: set VAR to a free loopback TCP port.
func freeport(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	port, err := sshdrun.FreePort()
	ts.Check(err)
	ts.Setenv(args[0], strconv.Itoa(port))
}

// waitca URL: wait, up to 2 minutes (a bound on a hang only), until the CA at URL answers /health.
func waitCA(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitca URL")
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		resp, err := c.Get(args[0] + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("CA at %s did not answer /health within 2 minutes: %v", args[0], err)
		}
	}
}

// genek FILE [VAR] [cert]: write a new RSA-2048 EK public key (or, with
// "cert", a self-signed EK certificate) as PEM, and set VAR to its DER in
// base64.
func genEK(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 3 {
		ts.Fatalf("usage: genek FILE [VAR] [cert]")
	}
	asCert := args[len(args)-1] == "cert"
	if asCert {
		args = args[:len(args)-1]
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	ts.Check(err)
	var block *pem.Block
	if asCert {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		ts.Check(err)
		block = &pem.Block{Type: "CERTIFICATE", Bytes: der}
	} else {
		der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		ts.Check(err)
		block = &pem.Block{Type: "PUBLIC KEY", Bytes: der}
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), pem.EncodeToMemory(block), 0o644))
	if len(args) == 2 {
		ts.Setenv(args[1], base64.StdEncoding.EncodeToString(block.Bytes))
	}
}

// subst IN OUT: copy IN to OUT with $VARs expanded.
func subst(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: subst IN OUT")
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(os.Expand(ts.ReadFile(args[0]), ts.Getenv)), 0o644))
}

// fingerprint VAR CERT: set VAR to the SHA-256 fingerprint of a PEM
// certificate.
func fingerprint(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: fingerprint VAR CERT")
	}
	block, _ := pem.Decode([]byte(ts.ReadFile(args[1])))
	if block == nil {
		ts.Fatalf("%s: no PEM", args[1])
	}
	sum := sha256.Sum256(block.Bytes)
	ts.Setenv(args[0], hex.EncodeToString(sum[:]))
}

// stdout2env VAR: set VAR to the last command's standard output, trimmed.
func stdoutToEnv(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: stdout2env VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// needtools TOOL...: skip the script if a tool is missing, but fail when
// CI=true.
func needTools(ts *testscript.TestScript, neg bool, args []string) {
	for _, tool := range args {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				ts.Fatalf("%s not found, and CI=true", tool)
			}
			ts.Value(tKey{}).(testscript.T).Skip(tool + " not found")
		}
	}
}

// swtpm [--ecc-only] DIR VAR: manufacture a TPM in DIR (EK certificate in
// DIR/ek.crt), serve it with swtpm on the unix socket DIR/sock until the
// script ends, and set VAR to unix:DIR/sock. With --ecc-only its only EK
// is swtpm's ECC P-384 one (swtpmtest.Options.ECCOnly).
func swtpmServe(ts *testscript.TestScript, neg bool, args []string) {
	var opts swtpmtest.Options
	if len(args) > 0 && args[0] == "--ecc-only" {
		opts.ECCOnly, args = true, args[1:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: swtpm [--ecc-only] DIR VAR")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o700))
	sw, err := opts.Serve(dir)
	ts.Check(err)
	ts.Defer(func() { ts.Check(sw.Stop()) })
	ts.Setenv(args[1], sw.Addr)
}

// pgdb VAR: create an empty PostgreSQL database (internal/pgtest), dropped
// when the script ends, and set VAR to its connection string; skip the
// script without a server, but fail when CI=true.
func pgDatabase(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: pgdb VAR")
	}
	admin, err := pgtest.Server()
	if err != nil {
		if os.Getenv("CI") == "true" {
			ts.Fatalf("pgtest: %v, and CI=true", err)
		}
		ts.Value(tKey{}).(testscript.T).Skip(err.Error())
	}
	dsn, drop, err := pgtest.Create(admin)
	ts.Check(err)
	ts.Defer(func() { ts.Check(drop()) })
	ts.Setenv(args[0], dsn)
}

type tKey struct{}
