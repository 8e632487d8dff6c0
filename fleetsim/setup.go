package fleetsim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/jackc/pgx/v5"
)

// env is the CAs the bench runs, and the simulated devices registered in
// the inventory.
type env struct {
	o        *Options
	dir      string
	ca       *caFiles
	replicas []*server
	stepca   *server
	admin    *adminapi.Client
	adminCrt string // the first admin's certificate and key files
	adminKey string
	devices  []*device
	dropDBs  []string // PostgreSQL databases to drop at the end
	log      *slog.Logger
}

// device is a simulated host or workstation.
type device struct {
	i    int
	id   string
	name string
	kind string // "host" or "workstation"
	ek   []byte
}

// setup makes the CA directory, starts the replicas and step-ca, and
// registers the devices.
func setup(ctx context.Context, o *Options) (*env, error) {
	e := &env{o: o, dir: o.Dir, log: o.Log}
	caDir := filepath.Join(e.dir, "ca")
	addrs := make([]string, o.Replicas)
	for i := range addrs {
		var err error
		if addrs[i], err = freePort(); err != nil {
			return e, err
		}
	}
	res, err := caserver.Init(caserver.InitOptions{Dir: caDir, DNSNames: []string{"127.0.0.1", "localhost"}, Address: addrs[0], Now: time.Now()})
	if err != nil {
		return e, err
	}
	if e.ca, err = readCAFiles(caDir); err != nil {
		return e, err
	}
	dbType, dataSource, database := "bbolt", "db/devid.db", ""
	stepSource, stepDatabase := filepath.Join(e.dir, "step-ca", "db"), ""
	if o.DB == "postgresql" {
		suffix := randHex(4)
		database, stepDatabase = "devid_bench_"+suffix, "stepca_bench_"+suffix
		for _, db := range []string{database, stepDatabase} {
			if err := pgExec(ctx, o.PostgresDSN, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
				return e, fmt.Errorf("fleetsim: PostgreSQL %q: create database %s: %w", o.PostgresDSN, db, err)
			}
			e.dropDBs = append(e.dropDBs, db)
		}
		dbType, dataSource, stepSource = "postgresql", o.PostgresDSN, o.PostgresDSN
	}
	day := o.Day
	k := float64(24*time.Hour) / float64(day)
	for i, addr := range addrs {
		cfgFile := res.Config
		if i > 0 {
			cfgFile = filepath.Join(caDir, fmt.Sprintf("devid-ca-%d.json", i+1))
		}
		err := editJSON(res.Config, cfgFile, func(m map[string]any) {
			m["address"] = addr
			m["lifetimes"] = map[string]any{"host": dur(day), "user": dur(userLifetime(k)), "device": "720h"}
			db := map[string]any{"type": dbType, "dataSource": dataSource}
			if database != "" {
				db["database"] = database
			}
			m["db"] = db
			delete(m, "metricsAddress")
		})
		if err != nil {
			return e, err
		}
		e.replicas = append(e.replicas, &server{name: fmt.Sprintf("devid-ca replica %d", i+1), bin: o.DevidCA,
			args: []string{"serve", "--config", cfgFile}, addr: addr, log: filepath.Join(e.dir, fmt.Sprintf("devid-ca-%d.log", i+1))})
	}
	// Replica 1 first: it makes the store's tables; then the others.
	for _, r := range e.replicas {
		if err := r.start(ctx, e.ca.roots); err != nil {
			return e, err
		}
	}
	if e.stepca, err = e.stepCAServer(caDir, dbType, stepSource, stepDatabase, day, k); err != nil {
		return e, err
	}
	if err := e.stepca.start(ctx, e.ca.roots); err != nil {
		return e, err
	}
	e.adminCrt, e.adminKey = res.AdminCert, res.AdminKey
	if e.admin, err = e.newAdminClient(); err != nil {
		return e, err
	}
	return e, e.register(ctx)
}

// stepCAServer writes a stock step-ca's configuration: the same root,
// intermediate and SSH CA keys as devid-ca, and one X5C provisioner of the
// same name as devid's device provisioner, trusting the same root, with
// the same lifetimes and no webhooks: the same /ssh/sign without devid's
// checks.
func (e *env) stepCAServer(caDir, dbType, source, database string, day time.Duration, k float64) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.dir, "step-ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(caDir, "certs", "root_ca.crt"))
	if err != nil {
		return nil, err
	}
	userDur := dur(userLifetime(k))
	db := map[string]any{"type": dbType, "dataSource": source}
	if database != "" {
		db["database"] = database
	}
	cfg := map[string]any{
		"root":     filepath.Join(caDir, "certs", "root_ca.crt"),
		"crt":      filepath.Join(caDir, "certs", "intermediate_ca.crt"),
		"key":      filepath.Join(caDir, "secrets", "intermediate_ca.key"),
		"address":  addr,
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"ssh":      map[string]any{"hostKey": filepath.Join(caDir, "secrets", "ssh_host_ca.key"), "userKey": filepath.Join(caDir, "secrets", "ssh_user_ca.key")},
		"db":       db,
		"logger":   map[string]any{"format": "text"},
		"authority": map[string]any{"provisioners": []any{map[string]any{
			"type": "X5C", "name": "devid-devices", "roots": base64.StdEncoding.EncodeToString(rootPEM),
			"claims": map[string]any{"enableSSHCA": true,
				"minHostSSHCertDuration": "10s", "maxHostSSHCertDuration": dur(day), "defaultHostSSHCertDuration": dur(day),
				"minUserSSHCertDuration": "10s", "maxUserSSHCertDuration": userDur, "defaultUserSSHCertDuration": userDur},
		}}},
		"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false,
			"cipherSuites": []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "ca.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return nil, err
	}
	return &server{name: "step-ca", bin: e.o.StepCA, args: []string{file}, addr: addr, log: filepath.Join(e.dir, "step-ca.log")}, nil
}

// newAdminClient is an admin API client of replica 1, as the first admin.
func (e *env) newAdminClient() (*adminapi.Client, error) {
	cert, err := loadKeyPair(e.adminCrt, e.adminKey)
	if err != nil {
		return nil, err
	}
	return adminapi.NewClient(e.replicas[0].URL(), e.ca.roots, cert)
}

// register imports the simulated devices (and the owner of the
// workstations) through the admin API, as `devid device import` does.
func (e *env) register(ctx context.Context) error {
	o := e.o
	if _, err := e.admin.AddUser(adminapi.NewUser{Email: "bench@example.com", Login: "bench"}); err != nil {
		return fmt.Errorf("fleetsim: adding the workstations' owner: %w", err)
	}
	nws := int(float64(o.Hosts) * o.Workstations)
	for i := range o.Hosts {
		id, ek, err := newEK()
		if err != nil {
			return err
		}
		d := &device{i: i, id: id, ek: ek, kind: "host", name: fmt.Sprintf("host-%05d", i)}
		if i < nws {
			d.kind, d.name = "workstation", fmt.Sprintf("ws-%05d", i)
		}
		e.devices = append(e.devices, d)
	}
	const chunk = 2000
	for lo := 0; lo < len(e.devices); lo += chunk {
		var rows []map[string]string
		for _, d := range e.devices[lo:min(lo+chunk, len(e.devices))] {
			r := map[string]string{"ek": base64.StdEncoding.EncodeToString(d.ek), "name": d.name, "kind": d.kind, "status": "active"}
			if d.kind == "workstation" {
				r["owner"] = "bench@example.com"
			}
			rows = append(rows, r)
		}
		if err := e.importRows(rows, lo); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) importRows(rows []map[string]string, first int) error {
	b, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	rep, err := e.admin.ImportDevices(fmt.Sprintf("bench-%d.json", first), b, false)
	if err != nil {
		return fmt.Errorf("fleetsim: importing devices %d…: %w", first, err)
	}
	if rep.Counts["added"] != len(rows) {
		return fmt.Errorf("fleetsim: importing devices %d…: %d added, want %d (%v)", first, rep.Counts["added"], len(rows), rep.Counts)
	}
	return nil
}

// close stops every process and drops the databases.
func (e *env) close() {
	for _, s := range append(e.replicas, e.stepca) {
		if s != nil {
			if err := s.stop(); err != nil {
				e.log.Warn("stopping", "server", s.name, "err", err)
			}
		}
	}
	for _, db := range e.dropDBs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := pgExec(ctx, e.o.PostgresDSN, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
			e.log.Warn("dropping a database", "database", db, "err", err)
		}
		cancel()
	}
}

func pgExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// editJSON reads the JSON object in from, lets edit change it, and writes
// it to to.
func editJSON(from, to string, edit func(map[string]any)) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("fleetsim: %s: %w", from, err)
	}
	edit(m)
	if b, err = json.MarshalIndent(m, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(to, append(b, '\n'), 0o644)
}

func dur(d time.Duration) string { return d.Round(time.Millisecond).String() }

func randHex(n int) string {
	b := make([]byte, n)
	io.ReadFull(rand.Reader, b)
	return hex.EncodeToString(b)
}

var _ = strings.TrimSpace
