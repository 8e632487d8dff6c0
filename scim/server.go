package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config configures a Handler.
type Config struct {
	// Prefix is the path the service is mounted at, e.g. "/scim/v2".
	Prefix string
	// Clients may use the service: the bearer token of one is required.
	Clients []Client
	// LoginFrom says where a user's login comes from (CheckLoginFrom);
	// "" is userName-localpart.
	LoginFrom string
	Log       *slog.Logger
}

// Handler serves the SCIM service.
type Handler struct {
	cfg Config
	lf  loginFrom
	b   Backend
	mux *http.ServeMux
}

// maxBody bounds a request body (devid-ca bounds them before, too).
const maxBody = 1 << 20

// DefaultCount is how many resources a list gives when the request says
// not; MaxCount the most it gives.
const (
	DefaultCount = 100
	MaxCount     = 1000
)

// New returns the service over b.
func New(cfg Config, b Backend) (*Handler, error) {
	lf, err := parseLoginFrom(cfg.LoginFrom)
	if err != nil {
		return nil, err
	}
	if len(cfg.Clients) == 0 {
		return nil, errors.New("scim: no clients")
	}
	h := &Handler{cfg: cfg, lf: lf, b: b, mux: http.NewServeMux()}
	p := strings.TrimRight(cfg.Prefix, "/")
	h.mux.HandleFunc(p+"/Users", h.methods(map[string]handlerFunc{"GET": h.listUsers, "POST": h.createUser}))
	h.mux.HandleFunc(p+"/Users/{id}", h.methods(map[string]handlerFunc{"GET": h.getUser, "PUT": h.putUser, "PATCH": h.patchUser, "DELETE": h.deleteUser}))
	h.mux.HandleFunc(p+"/Groups", h.methods(map[string]handlerFunc{"GET": h.listGroups, "POST": h.createGroup}))
	h.mux.HandleFunc(p+"/Groups/{id}", h.methods(map[string]handlerFunc{"GET": h.getGroup, "PUT": h.putGroup, "PATCH": h.patchGroup, "DELETE": h.deleteGroup}))
	h.mux.HandleFunc(p+"/ServiceProviderConfig", h.methods(map[string]handlerFunc{"GET": h.serviceProviderConfig}))
	h.mux.HandleFunc(p+"/ResourceTypes", h.methods(map[string]handlerFunc{"GET": h.resourceTypes}))
	h.mux.HandleFunc(p+"/ResourceTypes/{name}", h.methods(map[string]handlerFunc{"GET": h.resourceTypes}))
	h.mux.HandleFunc(p+"/Schemas", h.methods(map[string]handlerFunc{"GET": h.schemas}))
	h.mux.HandleFunc(p+"/Schemas/{id}", h.methods(map[string]handlerFunc{"GET": h.schemas}))
	h.mux.HandleFunc(p+"/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Detail: fmt.Sprintf("no SCIM endpoint %s (devid serves /Users, /Groups, /ServiceProviderConfig, /ResourceTypes, /Schemas)", r.URL.Path)})
	})
	return h, nil
}

// request is what a handler gets: the authenticated client.
type request struct {
	*http.Request
	client Client
}

func (r *request) actor() string { return "scim:" + r.client.Name }

type handlerFunc func(w http.ResponseWriter, r *request) error

// ServeHTTP authenticates the request and serves it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, ok := authenticate(h.cfg.Clients, r.Header.Get("Authorization"))
	if !ok {
		h.cfg.Log.Warn("SCIM request refused: no valid bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="devid-ca SCIM"`)
		writeError(w, &Error{Status: http.StatusUnauthorized, Detail: "authentication required: Authorization: Bearer with a token devid-ca's configuration names (devid-ca scim-token)"})
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(withClient(r.Context(), c)))
}

func (h *Handler) methods(m map[string]handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, ok := m[r.Method]
		if !ok {
			allowed := slices.Sorted(func(yield func(string) bool) {
				for k := range m {
					if !yield(k) {
						return
					}
				}
			})
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, &Error{Status: http.StatusMethodNotAllowed, Detail: fmt.Sprintf("%s %s: allowed methods %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))})
			return
		}
		req := &request{Request: r, client: clientOf(r.Context())}
		if err := f(w, req); err != nil {
			h.fail(w, req, err)
		}
	}
}

// fail answers with err: a *Error as it is, a Backend error by its kind,
// anything else 500 (logged, not shown).
func (h *Handler) fail(w http.ResponseWriter, r *request, err error) {
	var se *Error
	switch {
	case errors.As(err, &se):
	case errors.Is(err, ErrNotFound):
		se = &Error{Status: http.StatusNotFound, Detail: err.Error()}
	case errors.Is(err, ErrConflict):
		se = &Error{Status: http.StatusConflict, ScimType: "uniqueness", Detail: err.Error()}
	case errors.Is(err, ErrInvalid):
		se = badRequest("invalidValue", "%v", err)
		if h.lf.kind != "attribute" && strings.Contains(err.Error(), "login") {
			se.Detail += fmt.Sprintf(" (the login comes from %s: loginFrom in devid-ca's scim configuration says where)", h.lf.raw)
		}
	default:
		h.cfg.Log.Error("SCIM request failed", "client", r.client.Name, "method", r.Method, "path", r.URL.Path, "err", err)
		se = &Error{Status: http.StatusInternalServerError, Detail: "internal error; see devid-ca's log"}
	}
	level := slog.LevelInfo
	if se.Status >= 500 {
		level = slog.LevelError
	}
	h.cfg.Log.Log(r.Context(), level, "SCIM request refused", "client", r.client.Name, "method", r.Method, "path", r.URL.Path, "status", se.Status, "scim_type", se.ScimType, "detail", se.Detail)
	writeError(w, se)
}

func writeError(w http.ResponseWriter, e *Error) {
	body := struct {
		Schemas  []string `json:"schemas"`
		Status   string   `json:"status"`
		ScimType string   `json:"scimType,omitempty"`
		Detail   string   `json:"detail,omitempty"`
	}{[]string{errorSchema}, strconv.Itoa(e.Status), e.ScimType, e.Detail}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"schemas":["`+errorSchema+`"],"status":"500"}`)
	}
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// body reads a request's JSON body: its type application/scim+json,
// application/json, or not given.
func body(r *request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/scim+json" && mt != "application/json" {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Detail: fmt.Sprintf("Content-Type %q: want application/scim+json", ct)}
		}
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, badRequest("invalidSyntax", "reading the body: %v", err)
	}
	if len(b) > maxBody {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("body over %d bytes", maxBody)}
	}
	return b, nil
}

// query reads the query: only the parameters allowed, each once.
func query(r *request, allowed ...string) (map[string]string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("invalidValue", "query: %v", err)
	}
	out := map[string]string{}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return nil, badRequest("invalidValue", "unknown query parameter %q (devid takes %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return nil, badRequest("invalidValue", "query parameter %s given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// page is a list request's paging (RFC 7644 §3.4.2.4).
// listQuery reads a list request's query: its parameters, its page, and
// its filter's terms, checked against the attributes a filter on what
// (users or groups) may name. A bad filter is a 400 invalidFilter.
func listQuery(r *request, filterAttrs map[string][]string, what string) (map[string]string, page, []term, error) {
	q, err := query(r, "filter", "startIndex", "count", "attributes", "excludedAttributes")
	if err != nil {
		return nil, page{}, nil, err
	}
	p, err := parsePage(q)
	if err != nil {
		return nil, page{}, nil, err
	}
	var terms []term
	if f, ok := q["filter"]; ok {
		if terms, err = parseFilter(f); err == nil {
			err = checkTerms(terms, filterAttrs, what)
		}
		if err != nil {
			return nil, page{}, nil, badRequest("invalidFilter", "filter %q: %v", f, err)
		}
	}
	return q, p, terms, nil
}

type page struct{ start, count int }

func parsePage(q map[string]string) (page, error) {
	p := page{start: 1, count: DefaultCount}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"startIndex", &p.start}, {"count", &p.count}} {
		v, ok := q[f.name]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return p, badRequest("invalidValue", "%s %q: want an integer", f.name, v)
		}
		*f.dst = n
	}
	p.start = max(p.start, 1)
	p.count = min(max(p.count, 0), MaxCount)
	return p, nil
}

// listResponse is a ListResponse of the page of all.
func listResponse[T any](all []T, p page) any {
	from := min(p.start-1, len(all))
	to := min(from+p.count, len(all))
	items := all[from:to]
	if items == nil {
		items = []T{}
	}
	return struct {
		Schemas      []string `json:"schemas"`
		TotalResults int      `json:"totalResults"`
		ItemsPerPage int      `json:"itemsPerPage"`
		StartIndex   int      `json:"startIndex"`
		Resources    []T      `json:"Resources"`
	}{[]string{listSchema}, len(all), len(items), p.start, items}
}

// base is the service's URL as the client reached it, for meta.location.
func (h *Handler) base(r *request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host + strings.TrimRight(h.cfg.Prefix, "/")
}

func timeOf(t time.Time) string { return t.UTC().Format(time.RFC3339) }
