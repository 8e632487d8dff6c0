package caserver

import (
	"context"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// observeHTTP times every request (devid_ca_http_request_duration_seconds)
// by the chi route pattern it reached, never by its raw path, so that the
// labels stay few whatever clients ask for. It gives the router a route
// context of its own, which chi fills in and, being the caller's, neither
// recycles nor resets: the pattern is read from it once the request is
// answered. A request answered before routing (a body over the limit) has
// route "none"; a method other than the standard ones is "other"
// (methodLabel).
func (s *Server) observeHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rctx := chi.NewRouteContext()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rctx)))
		route := rctx.RoutePattern()
		if route == "" {
			route = "none"
		}
		s.metrics.httpDuration.WithLabelValues(route, methodLabel(r.Method), statusCode(sw.code)).Observe(time.Since(start).Seconds())
	})
}

// methodLabel is a request's method as a label value: one of the methods
// devid-ca's routes answer, else "other". Any client, without a
// certificate, can send any token as a method: taken as it came, each
// would make series of its own.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// statusWriter records the status code a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush flushes the connection's writer, for handlers that assert
// http.Flusher.
func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the connection's writer (read
// deadlines, flushes).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
