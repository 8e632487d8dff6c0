package attestca

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// ServeHTTP answers POST …/attest and POST …/secret (the last path
// element decides).
func (ca *CA) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use POST"})
		return
	}
	var resp any
	var err error
	switch {
	case strings.HasSuffix(r.URL.Path, "/attest"):
		var req AttestRequest
		if err = decode(r, &req); err == nil {
			resp, err = ca.Attest(&req)
		}
	case strings.HasSuffix(r.URL.Path, "/secret"):
		var req SecretRequest
		if err = decode(r, &req); err == nil {
			resp, err = ca.Secret(&req)
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	ca.observe(r.URL.Path, err)
	var ae *Error
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, resp)
	case errors.As(err, &ae):
		ca.cfg.Log.Warn("attestation refused", "path", r.URL.Path, "reason", ae.Msg)
		writeJSON(w, status(ae), map[string]string{"error": ae.Msg})
	default:
		ca.cfg.Log.Error("attestation failed", "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error; see the CA's log"})
	}
}

// status is the HTTP status a refusal is answered with.
func status(e *Error) int {
	if errors.Is(e, ErrInvalid) {
		return http.StatusBadRequest
	}
	return http.StatusForbidden
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("request body: %v", err)
	}
	if dec.More() {
		return invalid("request body: trailing data")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
