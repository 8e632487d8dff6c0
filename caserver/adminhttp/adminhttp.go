// Package adminhttp serves devid-ca's admin API (package adminapi has its
// routes, JSON and client) over the CA's stores: the device inventory
// (package inventory) and single-certificate revocation (package
// revocation). It converts between the stores' types and the wire types,
// so that the API's JSON stays as adminapi documents it whatever the
// stores keep, and maps the stores' errors to HTTP statuses:
//
//   - an *inventory.Error: 404 if errors.Is ErrNotFound, 409 if
//     ErrConflict, else 400, with its field and import line;
//   - *revocation.AlreadyRevokedError: 409; revocation.ErrUnknownCertificate:
//     404 (field serial); *revocation.WrongCAError: 400 (field
//     certificate);
//   - anything else: 500, the error logged, never shown.
//
// Every route needs an admin client certificate (AdminName); the caller
// (package caserver) mounts the Handler at adminapi.Prefix, after the
// public KRL route (krldist.Path) that shares the prefix.
package adminhttp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
	"golang.org/x/crypto/ssh"
)

// AdminName returns the admin a request is authenticated as: the common
// name of a verified client certificate chaining to adminRoot.
func AdminName(r *http.Request, adminRoot *x509.Certificate) (string, bool) {
	if r.TLS == nil {
		return "", false
	}
	for _, chain := range r.TLS.VerifiedChains {
		if len(chain) > 1 && bytes.Equal(chain[len(chain)-1].Raw, adminRoot.Raw) {
			return chain[0].Subject.CommonName, chain[0].Subject.CommonName != ""
		}
	}
	return "", false
}

type actorKey struct{}

// Handler serves the admin API, under adminapi.Prefix.
type Handler struct {
	store     *inventory.Store
	revoke    Revoker
	adminRoot *x509.Certificate
	log       *slog.Logger
	mux       *http.ServeMux
	importMax inventory.ImportOptions // MaxBytes and MaxRows of an import
}

// SetImportLimits bounds the imports: at most maxBytes of body and maxRows
// rows (0: inventory's defaults). The body of an import is read as a
// stream, never whole.
func (h *Handler) SetImportLimits(maxBytes int64, maxRows int) {
	h.importMax = inventory.ImportOptions{MaxBytes: maxBytes, MaxRows: maxRows}
}

// IsImport says whether r is an import, whose body the handler reads as a
// stream (up to the limits of SetImportLimits) rather than whole.
func IsImport(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, adminapi.Prefix+"import/")
}

// NewHandler returns the admin API over store, for admins whose client
// certificates chain to adminRoot.
func NewHandler(store *inventory.Store, revoke Revoker, adminRoot *x509.Certificate, log *slog.Logger) *Handler {
	h := &Handler{store: store, revoke: revoke, adminRoot: adminRoot, log: log, mux: http.NewServeMux()}
	const p = adminapi.Prefix
	h.mux.HandleFunc("POST "+p+"certs/revoke", h.revokeCert)
	h.mux.HandleFunc("GET "+p+"devices", h.listDevices)
	h.mux.HandleFunc("POST "+p+"devices", h.addDevice)
	h.mux.HandleFunc("GET "+p+"devices/{ref}", h.getDevice)
	h.mux.HandleFunc("POST "+p+"devices/{ref}/status", h.setStatus)
	h.mux.HandleFunc("POST "+p+"import/devices", h.importDevices)
	h.mux.HandleFunc("GET "+p+"users", h.listUsers)
	h.mux.HandleFunc("POST "+p+"users", h.addUser)
	h.mux.HandleFunc("GET "+p+"users/{email}", h.getUser)
	h.mux.HandleFunc("POST "+p+"import/users", h.importUsers)
	h.mux.HandleFunc("GET "+p+"collections", h.listCollections)
	h.mux.HandleFunc("GET "+p+"collections/{name}", h.getCollection)
	h.mux.HandleFunc("PUT "+p+"collections/{name}", h.setCollection)
	h.mux.HandleFunc("GET "+p+"audit", h.audit)
	h.enrolmentRoutes()
	h.routeUsers()
	h.mux.HandleFunc("GET "+p+"whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, adminapi.WhoAmI{Admin: actor(r)})
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := AdminName(r, h.adminRoot)
	switch {
	case ok:
	case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
		writeError(w, http.StatusUnauthorized, &adminapi.ErrorResponse{Error: "authentication required: present an admin client certificate"})
		return
	default:
		writeError(w, http.StatusForbidden, &adminapi.ErrorResponse{Error: "this client certificate is not an admin certificate"})
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, name)))
}

func actor(r *http.Request) string {
	s, _ := r.Context().Value(actorKey{}).(string)
	return s
}

// Revoker revokes single SSH certificates, and lists a device's (package
// revocation).
type Revoker interface {
	RevokeSerial(actor string, serial uint64, reason string) (*revocation.RevokedCert, error)
	RevokeCert(actor string, c *ssh.Certificate, reason string) (*revocation.RevokedCert, error)
	IssuedTo(keyID string) ([]*revocation.IssuedCert, error)
}

func (h *Handler) revokeCert(w http.ResponseWriter, r *http.Request) {
	var req adminapi.RevokeRequest
	if !h.decode(w, r, &req) {
		return
	}
	var rc *revocation.RevokedCert
	var err error
	switch {
	case req.Certificate != "" && req.Serial != 0:
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "give a serial or a certificate, not both"})
		return
	case req.Certificate != "":
		k, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(req.Certificate))
		c, ok := k.(*ssh.Certificate)
		if perr != nil || !ok {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "certificate: not an OpenSSH certificate", Field: "certificate"})
			return
		}
		rc, err = h.revoke.RevokeCert(actor(r), c, req.Reason)
	case req.Serial != 0:
		rc, err = h.revoke.RevokeSerial(actor(r), uint64(req.Serial), req.Reason)
	default:
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "give the serial or the certificate to revoke"})
		return
	}
	var already *revocation.AlreadyRevokedError
	var wrongCA *revocation.WrongCAError
	switch {
	case errors.As(err, &already):
		writeError(w, http.StatusConflict, &adminapi.ErrorResponse{Error: err.Error()})
	case errors.Is(err, revocation.ErrUnknownCertificate):
		writeError(w, http.StatusNotFound, &adminapi.ErrorResponse{Error: err.Error(), Field: "serial"})
	case errors.As(err, &wrongCA):
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: err.Error(), Field: "certificate"})
	case err != nil:
		h.fail(w, r, err)
	default:
		writeJSON(w, http.StatusOK, revokedCert(rc))
	}
}

// listDevices serves GET /devid/v1/devices[?status=S&kind=K&collection=C&owner=EMAIL].
// A filter that can match nothing because it is misspelt is a 400 naming
// the parameter: an unknown parameter, status or kind, an owner who is not
// a user, a collection no device is in.
func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "status", "kind", "collection", "owner")
	if !ok {
		return
	}
	if s, ok := q["status"]; ok {
		if _, err := inventory.ParseStatus(s); err != nil {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "status: " + err.Error(), Field: "status"})
			return
		}
	}
	if k, ok := q["kind"]; ok {
		if _, err := inventory.ParseKind(k); err != nil {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "kind: " + err.Error(), Field: "kind"})
			return
		}
	}
	if o, ok := q["owner"]; ok {
		u, err := h.store.User(o)
		if errors.Is(err, inventory.ErrNotFound) {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "owner: no user " + o, Field: "owner"})
			return
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		q["owner"] = u.Email
	}
	devs, err := h.store.Devices()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if c, ok := q["collection"]; ok && !slices.ContainsFunc(devs, func(d *inventory.Device) bool { return d.Collection == c }) {
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: fmt.Sprintf("collection: no device is in collection %q", c), Field: "collection"})
		return
	}
	out := []*adminapi.Device{}
	for _, d := range devs {
		if !matches(q, "status", string(d.Status)) || !matches(q, "kind", string(d.Kind)) ||
			!matches(q, "collection", d.Collection) || !matches(q, "owner", d.Owner) {
			continue
		}
		out = append(out, device(d))
	}
	writeJSON(w, http.StatusOK, adminapi.DeviceList{Devices: out})
}

// matches reports whether value passes the filter q[param], if there is one.
func matches(q map[string]string, param, value string) bool {
	want, ok := q[param]
	return !ok || want == value
}

// query reads a request's query: only the parameters allowed,
// each once, not empty. On an error it answers 400 naming the parameter.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (map[string]string, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "query: " + err.Error()})
		return nil, false
	}
	want := "this list takes none"
	if len(allowed) > 0 {
		want = "want " + strings.Join(allowed[:len(allowed)-1], ", ")
		if len(allowed) > 1 {
			want += " or "
		}
		want += allowed[len(allowed)-1]
	}
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		var msg string
		switch vs := q[k]; {
		case !slices.Contains(allowed, k):
			msg = fmt.Sprintf("unknown query parameter %q (%s)", k, want)
		case len(vs) > 1:
			msg = fmt.Sprintf("%s: given %d times; give it once", k, len(vs))
		case vs[0] == "":
			msg = fmt.Sprintf("%s: empty; leave the parameter out not to filter on it", k)
		default:
			out[k] = vs[0]
			continue
		}
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: msg, Field: k})
		return nil, false
	}
	return out, true
}

func (h *Handler) addDevice(w http.ResponseWriter, r *http.Request) {
	var nd adminapi.NewDevice
	if !h.decode(w, r, &nd) {
		return
	}
	d, err := h.store.AddDevice(actor(r), inventory.NewDevice(nd))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("device registered", "admin", actor(r), "device", d.ID, "name", d.Name, "kind", d.Kind, "status", d.Status)
	writeJSON(w, http.StatusCreated, device(d))
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.store.Device(r.PathValue("ref"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, device(d))
}

func (h *Handler) setStatus(w http.ResponseWriter, r *http.Request) {
	var req adminapi.StatusRequest
	if !h.decode(w, r, &req) {
		return
	}
	var d *inventory.Device
	var err error
	switch {
	case req.For != "":
		d, err = h.quarantineFor(actor(r), r.PathValue("ref"), req)
	default:
		d, err = h.store.SetStatus(actor(r), r.PathValue("ref"), inventory.Status(req.Status), req.Reason)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Warn("device status changed", "admin", actor(r), "device", d.ID, "name", d.Name, "status", d.Status, "reason", req.Reason, "until", d.QuarantineUntil)
	writeJSON(w, http.StatusOK, device(d))
}

func (h *Handler) importDevices(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("format") {
		h.importMDM(w, r)
		return
	}
	h.doImport(w, r, h.store.ImportDevicesFrom)
}

func (h *Handler) importUsers(w http.ResponseWriter, r *http.Request) {
	h.doImport(w, r, h.store.ImportUsersFrom)
}

// doImport runs an import on the request's body, read as a stream.
func (h *Handler) doImport(w http.ResponseWriter, r *http.Request, imp func(actor, file string, body io.Reader, opts inventory.ImportOptions) (*inventory.ImportReport, error), params ...string) {
	// A misspelt dry_run would otherwise import for real.
	q, ok := query(w, r, append([]string{"file", "dry_run"}, params...)...)
	if !ok {
		return
	}
	var dryRun bool
	if v, ok := q["dry_run"]; ok {
		var err error
		if dryRun, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: fmt.Sprintf("dry_run: want true or false, not %q", v), Field: "dry_run"})
			return
		}
	}
	file := q["file"]
	if file == "" {
		file = "import"
	}
	opts := h.importMax
	opts.DryRun = dryRun
	rep, err := imp(actor(r), file, r.Body, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("import", "admin", actor(r), "path", r.URL.Path, "file", file, "dry_run", dryRun, "counts", rep.Counts)
	writeJSON(w, http.StatusOK, importReport(rep))
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	users, err := h.store.Users()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]*adminapi.User, len(users))
	for i, u := range users {
		out[i] = user(u)
	}
	writeJSON(w, http.StatusOK, adminapi.UserList{Users: out})
}

func (h *Handler) addUser(w http.ResponseWriter, r *http.Request) {
	var nu adminapi.NewUser
	if !h.decode(w, r, &nu) {
		return
	}
	u, err := h.store.AddUser(actor(r), inventory.NewUser(nu))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("user added", "admin", actor(r), "user", u.Email)
	writeJSON(w, http.StatusCreated, user(u))
}

func (h *Handler) getUser(w http.ResponseWriter, r *http.Request) {
	u, err := h.store.User(r.PathValue("email"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, user(u))
}

// listCollections serves GET /devid/v1/collections: the collections set,
// and, with their defaults, those devices name that nobody set.
func (h *Handler) listCollections(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	set, err := h.store.Collections()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	devs, err := h.store.Devices()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	byName := map[string]*inventory.Collection{}
	for _, c := range set {
		byName[c.Name] = c
	}
	for _, d := range devs {
		if d.Collection != "" && byName[d.Collection] == nil {
			byName[d.Collection] = inventory.DefaultCollection(d.Collection)
		}
	}
	out := []*adminapi.Collection{}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, collection(byName[name]))
	}
	writeJSON(w, http.StatusOK, adminapi.CollectionList{Collections: out})
}

// getCollection serves GET /devid/v1/collections/{name}: the collection,
// its defaults if devices name it and nobody set it, else 404.
func (h *Handler) getCollection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	c, err := h.store.Collection(name)
	if errors.Is(err, inventory.ErrNotFound) {
		devs, derr := h.store.Devices()
		if derr != nil {
			h.fail(w, r, derr)
			return
		}
		if slices.ContainsFunc(devs, func(d *inventory.Device) bool { return d.Collection == name }) {
			c, err = inventory.DefaultCollection(name), nil
		} else {
			err = &inventory.Error{Kind: inventory.ErrNotFound, Msg: fmt.Sprintf("no collection %q: no device is in it and nobody set it", name)}
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, collection(c))
}

func (h *Handler) setCollection(w http.ResponseWriter, r *http.Request) {
	var u adminapi.CollectionUpdate
	if !h.decode(w, r, &u) {
		return
	}
	c, err := h.store.SetCollection(actor(r), inventory.CollectionUpdate{Name: r.PathValue("name"), AllowFileKeys: u.AllowFileKeys, HostNames: u.HostNames})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("collection set", "admin", actor(r), "collection", c.Name, "allow_file_keys", c.AllowFileKeys, "host_names", c.HostNames)
	writeJSON(w, http.StatusOK, collection(c))
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "subject")
	if !ok {
		return
	}
	subject := q["subject"]
	if subject != "" && !isID(subject) {
		// A device name: audit entries are by device ID.
		if d, err := h.store.Device(subject); err == nil {
			subject = d.ID
		}
	}
	entries, err := h.store.Audit(subject)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]adminapi.AuditEntry, len(entries))
	for i, e := range entries {
		out[i] = adminapi.AuditEntry(e)
		out[i].After = serialsAsStrings(e)
	}
	writeJSON(w, http.StatusOK, adminapi.AuditList{Entries: out})
}

// serialsAsStrings returns an audit entry's "after", with the serial of a
// cert.revoke entry as a string: entries written before serials were
// strings hold a JSON number.
func serialsAsStrings(e inventory.AuditEntry) json.RawMessage {
	if e.Action != "cert.revoke" {
		return e.After
	}
	var rc adminapi.RevokedCert
	if json.Unmarshal(e.After, &rc) != nil {
		return e.After
	}
	b, err := json.Marshal(rc)
	if err != nil {
		return e.After
	}
	return b
}

func isID(s string) bool { return len(s) > 4 && s[:4] == "urn:" || bytes.ContainsRune([]byte(s), '@') }

func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, adminapi.MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "request body: " + err.Error()})
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, &adminapi.ErrorResponse{Error: "request body: trailing data"})
		return false
	}
	return true
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ie *inventory.Error
	if errors.As(err, &ie) {
		code := http.StatusBadRequest
		switch {
		case errors.Is(err, inventory.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, inventory.ErrConflict):
			code = http.StatusConflict
		case errors.Is(err, inventory.ErrTooLarge):
			code = http.StatusRequestEntityTooLarge
		}
		writeError(w, code, &adminapi.ErrorResponse{Error: err.Error(), Field: ie.Field, Line: ie.Line})
		return
	}
	h.log.Error("admin API", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, &adminapi.ErrorResponse{Error: "internal error; see the CA's log"})
}

func writeError(w http.ResponseWriter, code int, e *adminapi.ErrorResponse) { writeJSON(w, code, e) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
