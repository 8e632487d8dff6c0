package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/cmd/devid-ca/cacli"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/jackc/pgx/v5"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// runCA runs devid-ca with args in this process and returns its exit
// code, standard output and standard error.
func runCA(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cacli.Main(args, &command.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

// userCertSigned is a user certificate signed with the CA directory's SSH
// user CA key (as step-ca would sign it, but not recorded by step-ca).
func userCertSigned(t *testing.T, dir string, serial uint64, keyID string) *ssh.Certificate {
	t.Helper()
	k, err := pemutil.Read(filepath.Join(dir, "secrets", "ssh_user_ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(k.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	now := time.Now()
	c := &ssh.Certificate{Key: sshPub, Serial: serial, CertType: ssh.UserCert, KeyId: keyID, ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return c
}

type caState struct {
	devices map[string]string // name → status
	users   []string
	krl     uint64
	keyIDs  map[string]bool
}

func stateOf(t *testing.T, ca *catest.CA) caState {
	t.Helper()
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := cl.Devices(nil)
	if err != nil {
		t.Fatal(err)
	}
	users, err := cl.Users()
	if err != nil {
		t.Fatal(err)
	}
	s := caState{devices: map[string]string{}, krl: ca.Server.PublishedKRL().Version, keyIDs: keyIDs(t, ca.Server.PublishedKRL().Body)}
	for _, d := range devs {
		s.devices[d.Name] = string(d.Status)
	}
	for _, u := range users {
		s.users = append(s.users, u.Email)
	}
	return s
}

// TestMigrate: a CA on bbolt with devices (one enrolled with a swtpm, so
// with an X.509 device certificate and an SSH host certificate step-ca
// issued and recorded), a user, a quarantined device and a revoked
// certificate is moved to PostgreSQL by `devid-ca migrate`: refused while
// it serves; without --write-config the config is untouched and the
// change printed; a second run into the now full target is refused
// without --replace; with --replace --write-config it succeeds, and the CA
// then serves from PostgreSQL with the same devices, users and KRL (same
// version), finds step-ca's records (binary DER, read back through step's
// PostgreSQL driver), issues a new SSH certificate and revokes the old one
// by its serial.
func TestMigrate(t *testing.T) {
	ca := catest.Start(t, nil)
	dsn := pgtest.New(t)
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	sw := swtpmtest.New(t)
	ek, err := sw.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"web-1.example.com"}
	web, err := cl.AddDevice(adminapi.NewDevice{Name: "web-1", Kind: "host", HostNames: names,
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ec := enroll.New(ca.URL, ca.Roots, quietLog(t))
	att, err := ec.Attest(ctx, sw.TPM)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	dc, err := ec.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	tpmPub, err := ssh.NewPublicKey(dc.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	hostCert, err := ec.SSHCertificate(ctx, dc, "host", names, tpmPub)
	if err != nil {
		t.Fatal(err)
	}
	var quarantined string
	for i := range 3 {
		d, err := cl.AddDevice(adminapi.NewDevice{EK: fakeEK(t), Name: fmt.Sprintf("host-%d", i), Kind: "host"})
		if err != nil {
			t.Fatal(err)
		}
		quarantined = d.ID
	}
	if _, err := cl.SetStatus(quarantined, adminapi.StatusQuarantined, "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddUser(adminapi.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	leaked := userCertSigned(t, ca.Dir, 4242, "alice-laptop")
	if _, err := cl.RevokeCert(adminapi.RevokeRequest{Certificate: string(ssh.MarshalAuthorizedKey(leaked)), Reason: "key leaked"}); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, ca)
	if !before.keyIDs[quarantined] || before.krl == 0 {
		t.Fatalf("before: KRL version %d, key IDs %v", before.krl, before.keyIDs)
	}

	// Refused while the CA serves; nothing written to the target.
	code, _, stderr := runCA("migrate", "--dir", ca.Dir, "--to", dsn)
	if code != command.ExitError || !strings.Contains(stderr, "stop it first") {
		t.Fatalf("migrate while serving: exit %d, %s", code, stderr)
	}
	if n := countTables(t, dsn); n != 0 {
		t.Fatalf("a refused migration left %d tables in the target", n)
	}
	ca.Stop()
	store := filepath.Join(ca.Dir, "db", "devid.db")
	cfgFile := filepath.Join(ca.Dir, caserver.ConfigFile)
	cfgBefore, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	storeBefore, err := os.ReadFile(store)
	if err != nil {
		t.Fatalf("the store is not where the test expects it: %v", err)
	}
	info, err := storebackup.Check(store)
	if err != nil {
		t.Fatal(err)
	}

	// Without --write-config: copied, the config untouched, the change
	// printed.
	code, stdout, stderr := runCA("migrate", "--dir", ca.Dir, "--to", dsn, "--json")
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, stderr)
	}
	var res caserver.MigrateResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, stdout)
	}
	if res.ConfigWritten || res.KRLVersion != before.krl || res.ConfigDB.Type != "postgresql" || res.ConfigDB.DataSource != dsn {
		t.Fatalf("summary: %+v", res)
	}
	rows := 0
	for _, tb := range res.Tables {
		if tb.Rows != info.Entries[tb.Name] {
			t.Errorf("table %s: %d rows copied, the store has %d", tb.Name, tb.Rows, info.Entries[tb.Name])
		}
		rows += tb.Rows
	}
	if len(res.Tables) != len(info.Entries) || rows != res.Rows {
		t.Errorf("%d tables copied (%d rows), the store has %d: %v", len(res.Tables), res.Rows, len(info.Entries), info.Entries)
	}
	if after, _ := os.ReadFile(cfgFile); !bytes.Equal(after, cfgBefore) {
		t.Fatal("migrate without --write-config changed the config")
	}
	if after, _ := os.ReadFile(store); !bytes.Equal(after, storeBefore) {
		t.Fatal("migrate changed the bbolt store")
	}

	// Again: the target is full.
	code, _, stderr = runCA("migrate", "--dir", ca.Dir, "--to", dsn)
	if code != command.ExitError || !strings.Contains(stderr, "holds devid-ca data already") || !strings.Contains(stderr, "devid_devices (4 rows)") {
		t.Fatalf("migrate into a full target: exit %d, %s", code, stderr)
	}
	// With --replace and --write-config.
	code, stdout, stderr = runCA("migrate", "--dir", ca.Dir, "--to", dsn, "--replace", "--write-config")
	if code != 0 {
		t.Fatalf("migrate --replace --write-config: exit %d: %s", code, stderr)
	}
	t.Logf("devid-ca migrate --replace --write-config:\n%s", stdout)
	if !strings.Contains(stdout, "emptied first: devid_devices, 4 rows") || !strings.Contains(stdout, `"type": "postgresql"`) {
		t.Errorf("migrate --replace --write-config said:\n%s", stdout)
	}
	cfg, err := caserver.LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DB.Type != "postgresql" || cfg.DB.DataSource != dsn || cfg.Address == "" {
		t.Fatalf("config after --write-config: db %+v", cfg.DB)
	}
	// Everything else byte for byte.
	after, _ := os.ReadFile(cfgFile)
	if i := bytes.Index(cfgBefore, []byte(`"db"`)); i < 0 || !bytes.Equal(after[:i], cfgBefore[:i]) {
		t.Errorf("the config before db changed:\n%s", after)
	}
	// A config on PostgreSQL is no bbolt store to migrate.
	if code, _, stderr = runCA("migrate", "--dir", ca.Dir, "--to", dsn); code != command.ExitError || !strings.Contains(stderr, "only a bbolt store") {
		t.Fatalf("migrate of a CA on PostgreSQL: exit %d, %s", code, stderr)
	}

	// Served from PostgreSQL.
	pg := catest.StartDir(t, ca.Dir)
	got := stateOf(t, pg)
	if fmt.Sprint(got.devices) != fmt.Sprint(before.devices) || fmt.Sprint(got.users) != fmt.Sprint(before.users) {
		t.Fatalf("on PostgreSQL: devices %v users %v; on bbolt: %v %v", got.devices, got.users, before.devices, before.users)
	}
	if got.krl != before.krl || !mapsEqual(got.keyIDs, before.keyIDs) {
		t.Fatalf("on PostgreSQL: KRL version %d revoking %v; on bbolt: %d revoking %v", got.krl, got.keyIDs, before.krl, before.keyIDs)
	}
	// step-ca's record of the device certificate: binary DER through
	// step's PostgreSQL driver.
	cdb, ok := pg.Server.Authority().GetDatabase().(interface {
		GetCertificate(serial string) (*x509.Certificate, error)
	})
	if !ok {
		t.Fatal("step-ca's database has no GetCertificate")
	}
	stored, err := cdb.GetCertificate(dc.Chain[0].SerialNumber.String())
	if err != nil || !bytes.Equal(stored.Raw, dc.Chain[0].Raw) {
		t.Fatalf("step-ca's record of the device certificate on PostgreSQL: %v", err)
	}
	// Issue and revoke.
	ec2 := enroll.New(pg.URL, pg.Roots, quietLog(t))
	if _, err := ec2.SSHCertificate(ctx, dc, "host", names, tpmPub); err != nil {
		t.Fatalf("SSH certificate from the CA on PostgreSQL: %v", err)
	}
	pcl, err := adminapi.NewClient(pg.URL, pg.Roots, &pg.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pcl.RevokeCert(adminapi.RevokeRequest{Serial: adminapi.Serial(hostCert.Serial), Reason: "migrated, then revoked"}); err != nil {
		t.Fatalf("revoke by serial a certificate issued on bbolt: %v", err)
	}
	k := pg.Server.PublishedKRL()
	if k.Version <= before.krl {
		t.Fatalf("KRL version %d after a revocation, was %d", k.Version, before.krl)
	}
	if !krlRevokes(t, k.Body, hostCert) || !krlRevokes(t, k.Body, leaked) {
		t.Fatal("the KRL on PostgreSQL does not revoke the certificate revoked there, or the one revoked on bbolt")
	}
	if _, err := pcl.Device(web.ID); err != nil {
		t.Fatal(err)
	}
}

func krlRevokes(t *testing.T, body []byte, c *ssh.Certificate) bool {
	t.Helper()
	k, err := krlParse(body)
	if err != nil {
		t.Fatal(err)
	}
	return k.IsRevoked(c)
}

// countTables counts the tables of dsn's database's public schema.
func countTables(t *testing.T, dsn string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
