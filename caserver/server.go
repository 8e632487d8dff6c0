// Package caserver is devid-ca: the compact CA service.
//
// It composes step-ca's authority (github.com/smallstep/certificates) as a
// library, so signing, provisioners, templates and storage are step-ca's own,
// and adds devid's device inventory and admin API beside step-ca's endpoints
// on one HTTPS listener:
//
//   - /health, /roots, /root/{sha}, /ssh/roots, /ssh/sign, /ssh/renew, …
//     (also under /1.0/) answer exactly as step-ca's do, and /acme/… is
//     step-ca's ACME server (the provisioner wire.AttestProvisioner), behind
//     devid's check that an attested key cannot leave its TPM (package
//     issuance/tpmkey);
//   - /attestation/… is the Attestation CA (package attestca), for devices;
//   - GET /devid/v1/krl (krldist.Path) is the KRL (package revocation
//     serves it), public: hosts poll it without a client certificate. It
//     is routed on its own, before the admin API's prefix, whose handler
//     never sees it;
//   - every other /devid/v1/… path is the admin API (package adminapi; its
//     handler is package caserver/adminhttp), for admin client
//     certificates only. An admin certificate is refused outside
//     /devid/v1/;
//   - /scim/v2/… is the SCIM 2.0 service (package scim, over the
//     inventory: scim.go), for the SCIM clients of Config.SCIM, each by
//     its bearer token; absent (404) when none is configured.
//
// Init creates a new CA directory; LoadConfig reads its configuration; New
// builds the server and Serve runs it: the HTTPS server and the background
// tasks (KRL rebuild, KRL watch, the end of temporary quarantines; on
// PostgreSQL, KRL notifications and catch-up), each restarted after a
// failure (internal/task).
//
// Several devid-ca may serve one PostgreSQL database as replicas
// (pgreplica.go); Migrate moves a bbolt store into PostgreSQL.
package caserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver/adminhttp"
	"github.com/devid-ssh/devid/caserver/pgchanges"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/issuance"
	"github.com/devid-ssh/devid/issuance/tpmkey"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/revocation"
	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/acme"
	acmeapi "github.com/smallstep/certificates/acme/api"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"
	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	stepca "github.com/smallstep/certificates/ca"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/certificates/logging"
	"github.com/smallstep/nosql"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// sshTemplate makes SSH certificates from what package issuance decided,
// never from what the device asked for.
const sshTemplate = `{
	"type": {{ toJson .Type }},
	"keyId": {{ toJson .Webhooks.devid.keyId }},
	"principals": {{ toJson .Webhooks.devid.principals }},
	"extensions": {{ toJson .Extensions }},
	"criticalOptions": {{ toJson .CriticalOptions }}
}`

// authorityInit serialises step-ca authority initialisation, which writes
// package-level state in step-ca's templates package (a data race when
// several CAs start at once in one process, as in tests).
var authorityInit sync.Mutex

// Options are the run-time dependencies of a Server.
type Options struct {
	Logger *slog.Logger     // required
	Now    func() time.Time // default time.Now
}

// Server is a running CA's state.
type Server struct {
	cfg       *Config
	log       *slog.Logger
	now       func() time.Time
	auth      *authority.Authority
	inv       *inventory.Store
	adminRoot *x509.Certificate
	root      *x509.Certificate
	handler   http.Handler
	renewer   *stepca.TLSRenewer
	tls       *tls.Config
	attest    *attestca.CA
	revoke    *revocation.Store
	policy    *issuance.Policy
	whSecret  []byte
	acmeDB    acme.DB
	linker    acme.Linker
	scimH     http.Handler        // the SCIM service; nil when off
	notify    *pgchanges.Listener // KRL changes on PostgreSQL (pgreplica.go); nil on bbolt
	metrics   *Metrics
	db        nosql.DB // the store, as step-ca opened it (backup.go, Healthy)
	unlock    func()   // releases the store's restore lock (storebackup.LockServe)
}

// New opens the store and builds the CA from cfg.
func New(cfg *Config, opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{cfg: cfg, log: opts.Logger, now: opts.Now, metrics: newMetrics()}
	var err error
	if s.root, err = readCert(cfg.path(cfg.Root)); err != nil {
		return nil, err
	}
	if s.adminRoot, err = readCert(cfg.path(cfg.AdminRoot)); err != nil {
		return nil, err
	}
	if bytes.Equal(s.root.Raw, s.adminRoot.Raw) {
		return nil, errors.New("devid-ca: adminRoot must not be the root devices trust")
	}
	s.whSecret = make([]byte, 32)
	if _, err := rand.Read(s.whSecret); err != nil {
		return nil, err
	}
	stepCfg, err := s.stepConfig()
	if err != nil {
		return nil, err
	}
	// step-ca calls devid's issuance policy as webhooks, in process; the
	// policy needs the inventory, which needs step-ca's database: it is set
	// below, before anything is served.
	webhooks := issuance.InProcess{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.policy.ServeHTTP(w, r)
	})}
	if cfg.DB.Type == "bbolt" {
		// Held while the store is open: no restore meanwhile, and none in
		// progress now (its new store would replace the one opened).
		if s.unlock, err = storebackup.LockServe(cfg.path(cfg.DB.DataSource)); errors.Is(err, storebackup.ErrRestoring) {
			return nil, fmt.Errorf("devid-ca: %w: start the CA once it is done", err)
		} else if err != nil {
			return nil, fmt.Errorf("devid-ca: %w", err)
		}
	}
	if cfg.DB.Type == "postgresql" {
		// One devid-ca at a time creates the tables (pgreplica.go).
		unlockStart, err := pgStartLock(context.Background(), cfg.DB)
		if err != nil {
			return nil, err
		}
		defer unlockStart()
	}
	authorityInit.Lock()
	s.auth, err = authority.New(stepCfg, authority.WithQuietInit(), authority.WithWebhookClient(webhooks),
		authority.WithMeter(meter{s.metrics}))
	authorityInit.Unlock()
	if err != nil {
		s.unlockStore()
		return nil, fmt.Errorf("devid-ca: step-ca authority: %w", err)
	}
	if err := s.open(opts); err != nil {
		s.auth.Shutdown()
		s.unlockStore()
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// open opens devid's parts of the store and the Attestation CA.
func (s *Server) open(opts Options) error {
	raw, ok := s.auth.GetDatabase().(nosql.DB)
	if !ok {
		return errors.New("devid-ca: the store is not a nosql database")
	}
	if s.cfg.DB.Type == "postgresql" {
		// An atomic compare-and-swap, for step-ca and devid (pgstore.go).
		var err error
		if raw, err = wrapPG(s.auth.GetDatabase(), s.cfg.DB); err != nil {
			return err
		}
	}
	s.db = raw
	// devid's packages and ACME use the store through a wrapper that
	// counts its errors (devid_ca_store_errors_total).
	var ndb nosql.DB = countingDB{DB: raw, failed: func(op string) { s.metrics.storeErrors.WithLabelValues(op).Inc() }}
	var err error
	if s.inv, err = inventory.Open(ndb, opts.Now); err != nil {
		return fmt.Errorf("devid-ca: %w", err)
	}
	s.policy = issuance.New(s.inv, s.whSecret, s.log)
	s.policy.Observe(s.metrics)
	c := s.cfg
	attCert, err := readCert(c.path(c.Attestation.Cert))
	if err != nil {
		return err
	}
	k, err := pemutil.Read(c.path(c.Attestation.Key))
	if err != nil {
		return fmt.Errorf("devid-ca: attestation key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return fmt.Errorf("devid-ca: %s is not a signing key", c.Attestation.Key)
	}
	acfg := attestca.Config{Cert: attCert, Signer: signer, SecretTTL: c.Attestation.SecretTTL.Duration,
		AKCertLifetime: c.Attestation.AKCertLifetime.Duration, Now: opts.Now, Log: s.log, Observer: attestObserver{s.metrics}}
	if c.Attestation.EKRoots != "" {
		certs, err := pemutil.ReadCertificateBundle(c.path(c.Attestation.EKRoots))
		if err != nil {
			return fmt.Errorf("devid-ca: attestation.ekRoots: %w", err)
		}
		acfg.EKRoots, acfg.EKIntermediates = x509.NewCertPool(), x509.NewCertPool()
		for _, ec := range certs {
			if bytes.Equal(ec.RawIssuer, ec.RawSubject) {
				acfg.EKRoots.AddCert(ec)
			} else {
				acfg.EKIntermediates.AddCert(ec)
			}
		}
	}
	if s.attest, err = attestca.New(acfg, s.inv, ndb); err != nil {
		return err
	}
	if s.revoke, err = s.openRevocation(ndb, opts.Now); err != nil {
		return err
	}
	if h, err := s.newSCIM(); err != nil {
		return fmt.Errorf("devid-ca: %w", err)
	} else if h != nil {
		s.scimH = h
	}
	if s.acmeDB, err = acmenosql.New(ndb); err != nil {
		return fmt.Errorf("devid-ca: ACME store: %w", err)
	}
	dns := c.DNSNames[0]
	if strings.Contains(dns, ":") {
		dns = "[" + dns + "]"
	}
	if _, port, err := net.SplitHostPort(c.Address); err == nil && port != "443" && port != "" {
		dns += ":" + port
	}
	s.linker = acme.NewLinker(dns, "acme")
	s.metrics.state.setSources(s.revoke, map[string]*x509.Certificate{
		"root": s.root, "intermediate": s.auth.GetIntermediateCertificate(), "attestation": attCert, "admin_root": s.adminRoot,
	})
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	c, err := pemutil.ReadCertificate(path)
	if err != nil {
		return nil, fmt.Errorf("devid-ca: %w", err)
	}
	return c, nil
}

// stepConfig is the step-ca configuration devid-ca runs with: built here,
// never written, so that devid's config file stays the only one.
func (s *Server) stepConfig() (*config.Config, error) {
	c := s.cfg
	rootPEM, err := os.ReadFile(c.path(c.Root))
	if err != nil {
		return nil, fmt.Errorf("devid-ca: %w", err)
	}
	attPEM, err := os.ReadFile(c.path(c.Attestation.Cert))
	if err != nil {
		return nil, fmt.Errorf("devid-ca: %w", err)
	}
	yes := true
	dur := func(d time.Duration) *provisioner.Duration { return &provisioner.Duration{Duration: d} }
	minDur := 10 * time.Second
	secret := base64.StdEncoding.EncodeToString(s.whSecret)
	hook := func(kind, certType, path string) *provisioner.Webhook {
		return &provisioner.Webhook{ID: "devid-" + path, Name: "devid", URL: issuance.Base + path, Kind: kind, CertType: certType, Secret: secret}
	}
	devices := &provisioner.X5C{
		Type:  "X5C",
		Name:  wire.DeviceProvisioner,
		Roots: rootPEM,
		Options: &provisioner.Options{
			SSH: &provisioner.SSHOptions{Template: sshTemplate},
			Webhooks: []*provisioner.Webhook{
				hook("ENRICHING", "SSH", issuance.PathSSH),
				hook("AUTHORIZING", "X509", issuance.PathDeny),
			},
		},
		Claims: &provisioner.Claims{
			EnableSSHCA:       &yes,
			MinHostSSHDur:     dur(minDur),
			MaxHostSSHDur:     dur(c.Lifetimes.Host.Duration),
			DefaultHostSSHDur: dur(c.Lifetimes.Host.Duration),
			MinUserSSHDur:     dur(minDur),
			MaxUserSSHDur:     dur(c.Lifetimes.User.Duration),
			DefaultUserSSHDur: dur(c.Lifetimes.User.Duration),
			MinTLSDur:         dur(minDur),
			MaxTLSDur:         dur(c.Lifetimes.Device.Duration),
			DefaultTLSDur:     dur(c.Lifetimes.Device.Duration),
		},
	}
	tpmACME := &provisioner.ACME{
		Type:               "ACME",
		Name:               wire.AttestProvisioner,
		Challenges:         []provisioner.ACMEChallenge{provisioner.DEVICE_ATTEST_01},
		AttestationFormats: []provisioner.ACMEAttestationFormat{provisioner.TPM},
		AttestationRoots:   attPEM,
		Options: &provisioner.Options{
			Webhooks: []*provisioner.Webhook{hook("AUTHORIZING", "X509", issuance.PathDevice)},
		},
		Claims: &provisioner.Claims{
			MinTLSDur:      dur(minDur),
			MaxTLSDur:      dur(c.Lifetimes.Device.Duration),
			DefaultTLSDur:  dur(c.Lifetimes.Device.Duration),
			DisableRenewal: &yes, // a device certificate comes only from a fresh attestation
		},
	}
	return &config.Config{
		Root:             []string{c.path(c.Root)},
		IntermediateCert: c.path(c.Intermediate),
		IntermediateKey:  c.path(c.IntermediateKey),
		Address:          c.Address,
		DNSNames:         c.DNSNames,
		SSH:              &config.SSHConfig{HostKey: c.path(c.SSHHostKey), UserKey: c.path(c.SSHUserKey)},
		DB:               &db.Config{Type: c.DB.Type, DataSource: c.path(c.DB.DataSource), Database: c.DB.Database},
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{devices, tpmACME},
		},
		TLS: &config.DefaultTLSOptions,
	}, nil
}

// Inventory is the device inventory.
func (s *Server) Inventory() *inventory.Store { return s.inv }

// Authority is the step-ca authority devid-ca runs.
func (s *Server) Authority() *authority.Authority { return s.auth }

// Revocation is the revocation store.
func (s *Server) Revocation() *revocation.Store { return s.revoke }

// PublishedKRL is the KRL being served, with its version and signature.
func (s *Server) PublishedKRL() *revocation.Published { return s.revoke.Current() }

// Handler is the whole HTTP API: step-ca's endpoints and devid's.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := chi.NewRouter()
	api.Route(mux)
	mux.Route("/1.0", func(r chi.Router) { api.Route(r) })
	mux.Route("/acme", func(r chi.Router) { acmeapi.Route(r) })
	// Public, though under the admin API's prefix: hosts fetch it without
	// a client certificate. chi routes a static path before a wildcard,
	// whatever the order; TestPublicRoutes checks it.
	mux.Handle(krldist.Path, s.revoke)
	// Admins only (serveBackup checks), routed on its own like the KRL.
	mux.Handle(adminapi.BackupPath, http.HandlerFunc(s.serveBackup))
	admin := adminhttp.NewHandler(s.inv, s.revoke, s.adminRoot, s.log)
	admin.SetImportLimits(s.cfg.Limits.ImportMaxBytes, s.cfg.Limits.ImportMaxRows)
	mux.Handle(adminapi.Prefix+"*", admin)
	mux.Handle(wire.AttestationPath+"/*", s.attest)
	if s.scimH != nil {
		mux.Handle(scimPrefix+"/*", s.scimH) // bearer tokens (package scim), not client certificates
	}
	auth := s.auth
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An admin certificate is for the admin API only: step-ca would
		// otherwise renew it (/renew accepts certificates without a
		// provisioner) into one that devices' provisioners trust.
		if _, isAdmin := adminhttp.AdminName(r, s.adminRoot); isAdmin && !strings.HasPrefix(r.URL.Path, adminapi.Prefix) {
			http.Error(w, `{"error": "admin certificates may only be used with the admin API"}`, http.StatusForbidden)
			return
		}
		ctx := authority.NewContext(r.Context(), auth)
		if adb := auth.GetDatabase(); adb != nil {
			ctx = db.NewContext(ctx, adb)
		}
		ctx = acme.NewContext(ctx, s.acmeDB, acme.NewClient(), s.linker, nil)
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
	// devid's own check that a device-attest-01 key cannot leave its TPM,
	// before step-ca's ACME server sees the challenge (package
	// issuance/tpmkey).
	h = tpmkey.Guard(h, s.log)
	return s.observeHTTP(s.accessLog(s.limitBody(h)))
}

// krlMaxWait is the longest a KRL long-poll may wait (revocation's ?wait=
// allows up to 5m); writeTimeout leaves it a minute to answer.
const (
	krlMaxWait   = 5 * time.Minute
	writeTimeout = krlMaxWait + time.Minute
)

// limitBody reads a request's body before any handler sees it: at most
// Limits.MaxBody bytes (adminapi.MaxBody on the admin API for an
// authenticated admin, for imports),
// within Limits.BodyTimeout. A declared length over the limit is refused
// with 413 without reading anything; a body that grows past it is refused
// as soon as it does, and a body that comes too slowly gets 408. Either way
// the connection is closed. The handler then reads the body from memory,
// and the connection has no read deadline while it runs, so that a
// long-poll is not cut short.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		// Only an admin, by a verified certificate, gets the admin API's
		// larger limit: an anonymous client never makes the CA hold more
		// than Limits.MaxBody.
		limit := s.cfg.Limits.MaxBody
		_, admin := adminhttp.AdminName(r, s.adminRoot)
		if admin && adminhttp.IsImport(r) {
			// An import is read as a stream by the inventory, within its
			// own bounds (Limits.ImportMaxBytes, ImportMaxRows): not here.
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(10 * s.cfg.Limits.BodyTimeout.Duration)); err != nil {
				s.log.Error("cannot bound the request body's read time", "err", err)
			}
			next.ServeHTTP(w, r)
			rc.SetReadDeadline(time.Time{})
			return
		}
		if admin && strings.HasPrefix(r.URL.Path, adminapi.Prefix) {
			limit = adminapi.MaxBody
		}
		if r.ContentLength > limit {
			refuseBody(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes: the limit is %d", r.ContentLength, limit))
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(s.cfg.Limits.BodyTimeout.Duration)); err != nil {
			s.log.Error("cannot bound the request body's read time", "err", err)
		}
		// The buffer grows with what arrives, not with what is declared.
		var buf bytes.Buffer
		_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			refuseBody(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the limit of %d bytes", limit))
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			refuseBody(w, http.StatusRequestTimeout, fmt.Sprintf("request body not received within %v", s.cfg.Limits.BodyTimeout.Duration))
			return
		case err != nil:
			refuseBody(w, http.StatusBadRequest, "reading the request body: "+err.Error())
			return
		}
		rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(&buf)
		r.ContentLength = int64(buf.Len())
		next.ServeHTTP(w, r)
	})
}

// refuseBody answers a request whose body was not read, and closes the
// connection rather than read the rest.
func refuseBody(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// accessLog logs every request: at debug level a KRL poll answered 200 or
// 304, else at info, warn (4xx) or error (5xx). It wraps the response in step-ca's
// ResponseLogger, in which step-ca's handlers leave the detail of an error
// they answer with only a generic message.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := logging.NewResponseLogger(w)
		next.ServeHTTP(loggedWriter{rw, w}, r)
		code := rw.StatusCode()
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", code,
			"duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr}
		if name, ok := adminhttp.AdminName(r, s.adminRoot); ok {
			attrs = append(attrs, "admin", name)
		}
		if e, ok := rw.Fields()["error"]; ok {
			msg, _, _ := strings.Cut(fmt.Sprint(e), "\n") // step-ca appends a stack trace
			attrs = append(attrs, "error", msg)
		}
		level := slog.LevelInfo
		switch {
		case code >= 500:
			level = slog.LevelError
		case code >= 400:
			level = slog.LevelWarn
		case r.URL.Path == krldist.Path:
			// Every host long-polls the KRL, about once a minute: routine.
			// A new KRL is logged once, when it is published.
			level = slog.LevelDebug
		}
		s.log.Log(r.Context(), level, "request", attrs...)
	})
}

// loggedWriter is step-ca's ResponseLogger, unwrapping to the connection's
// writer for http.ResponseController (read deadlines, flushes).
type loggedWriter struct {
	logging.ResponseLogger
	w http.ResponseWriter
}

func (l loggedWriter) Unwrap() http.ResponseWriter { return l.w }

// TLSConfig is the server's TLS configuration: a certificate for the
// configured names from step-ca, renewed before it expires, and client
// certificates verified against the CA's roots and the admin root.
func (s *Server) TLSConfig() (*tls.Config, error) {
	if s.tls != nil {
		return s.tls, nil
	}
	crt, err := s.auth.GetTLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("devid-ca: TLS certificate: %w", err)
	}
	if s.renewer, err = stepca.NewTLSRenewer(crt, s.auth.GetTLSCertificate); err != nil {
		return nil, fmt.Errorf("devid-ca: TLS renewer: %w", err)
	}
	s.renewer.Run()
	s.metrics.state.setTLS(s.renewer.GetCertificateForCA)
	pool := x509.NewCertPool()
	for _, c := range s.auth.GetRootCertificates() {
		pool.AddCert(c)
	}
	for _, der := range crt.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
	}
	pool.AddCert(s.adminRoot)
	s.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.renewer.GetCertificateForCA,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      pool,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	return s.tls, nil
}

// Serve serves HTTPS on ln and runs devid-ca's background tasks (see
// tasks) until ctx is done, then shuts down gracefully and returns once
// every task has stopped. A task that fails is logged and restarted after
// a backoff; a failure of the HTTPS server itself ends Serve with its
// error. ready, if not nil, is called once the listener serves.
func (s *Server) Serve(ctx context.Context, ln net.Listener, ready func()) error {
	return s.ServeWith(ctx, ServeOptions{HTTPS: ln, Ready: ready})
}

// ServeOptions are what ServeWith serves on, and whom it tells.
type ServeOptions struct {
	// HTTPS is the listener of the CA's API. Required.
	HTTPS net.Listener
	// Metrics, if not nil, is the listener of /metrics (plain HTTP; see
	// Config.MetricsAddress).
	Metrics net.Listener
	// Ready, if not nil, is called once every listener serves.
	Ready func()
	// Watchdog, if not nil, runs as the task "watchdog" until its context
	// ends, with the server's health check (Healthy): devid-ca passes
	// sdnotify.Watchdog, which pings systemd while the check passes.
	Watchdog func(ctx context.Context, log *slog.Logger, healthy func(context.Context) error)
}

// ServeWith is Serve with a metrics listener and a watchdog.
func (s *Server) ServeWith(ctx context.Context, o ServeOptions) error {
	tc, err := s.TLSConfig()
	if err != nil {
		return err
	}
	r := task.Runner{Log: s.log}
	return r.Run(ctx, s.tasks(o, tc)...)
}

// Metrics are the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Close stops the TLS renewer and closes the store.
func (s *Server) Close() error {
	if s.renewer != nil {
		s.renewer.Stop()
	}
	err := s.auth.Shutdown()
	s.unlockStore()
	return err
}

func (s *Server) unlockStore() {
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
}

// openRevocation opens the revocation store, which signs KRLs with the SSH
// user CA key.
func (s *Server) openRevocation(ndb nosql.DB, now func() time.Time) (*revocation.Store, error) {
	c := s.cfg
	signers := map[string]ssh.Signer{}
	for name, file := range map[string]string{"host": c.SSHHostKey, "user": c.SSHUserKey} {
		k, err := pemutil.Read(c.path(file))
		if err != nil {
			return nil, fmt.Errorf("devid-ca: SSH %s CA key: %w", name, err)
		}
		sg, err := ssh.NewSignerFromKey(k)
		if err != nil {
			return nil, fmt.Errorf("devid-ca: SSH %s CA key: %w", name, err)
		}
		signers[name] = sg
	}
	changes, err := s.krlChanges()
	if err != nil {
		return nil, err
	}
	return revocation.Open(revocation.Config{
		Changes: changes,
		HostCA:  signers["host"].PublicKey(), UserCA: signers["user"].PublicKey(), Signer: signers["user"],
		// A certificate may be valid as late as its device certificate
		// (step-ca lets the request choose when it starts, within it).
		MaxLifetime: max(c.Lifetimes.Host.Duration, c.Lifetimes.User.Duration, c.Lifetimes.Device.Duration), Now: now, Log: s.log,
	}, ndb, s.inv)
}
