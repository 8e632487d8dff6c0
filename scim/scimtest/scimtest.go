// Package scimtest plays recorded SCIM request sequences (what an IdP
// sends, and what it expects back) against a SCIM service: package scim's
// handler over a fake store in its unit tests, and a real devid-ca in
// caserver's.
//
// A sequence is a txtar archive (testdata/*.txtar, embedded: Sequences).
// Its comment names where the requests come from. Each request is a file
// named "METHOD PATH" whose content is the body (the query may be written
// as the documentation shows it, with spaces and quotes: it is encoded
// before it is sent); the file after it, named by a status code, is what
// must come back: a JSON value the response body must contain (objects:
// every member given, recursively; arrays: as many elements, each
// matching), or nothing (no body check; a 204 must have no body). A
// string "${NAME}" in an expected body binds NAME to the value found
// there the first time and must equal it after; "${_}" matches any value
// that is present, "${absent}" a member that is not. ${NAME} in a request
// line or body is replaced by its value.
package scimtest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

//go:embed testdata/*.txtar
var files embed.FS

// Sequences returns the recorded sequences, by file name (okta.txtar,
// entra.txtar, …).
func Sequences() map[string][]byte {
	out := map[string][]byte{}
	entries, _ := files.ReadDir("testdata")
	for _, e := range entries {
		b, _ := files.ReadFile(path.Join("testdata", e.Name()))
		out[e.Name()] = b
	}
	return out
}

var placeholder = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// Run plays the sequence data against h, with "Authorization: Bearer
// token", and returns the names it bound. Requests go to h directly
// (httptest), or, when base is not "", over HTTP to base (with client).
func Run(t testing.TB, h http.Handler, client *http.Client, base, token string, data []byte) map[string]string {
	t.Helper()
	ar := txtar.Parse(data)
	vars := map[string]string{}
	subst := func(s string) string {
		return placeholder.ReplaceAllStringFunc(s, func(m string) string {
			name := m[2 : len(m)-1]
			v, ok := vars[name]
			if !ok {
				t.Fatalf("${%s} is used before it is bound", name)
			}
			return v
		})
	}
	for i := 0; i < len(ar.Files); i++ {
		req := ar.Files[i]
		method, target, ok := strings.Cut(req.Name, " ")
		if !ok || i+1 >= len(ar.Files) {
			t.Fatalf("file %q: want a request (METHOD PATH) followed by a status", req.Name)
		}
		i++
		resp := ar.Files[i]
		status, err := strconv.Atoi(resp.Name)
		if err != nil {
			t.Fatalf("after %q: file %q is not a status", req.Name, resp.Name)
		}
		target = encodeQuery(subst(target))
		reqBody := subst(string(req.Data))
		code, ctype, got := do(t, h, client, base, method, target, token, reqBody)
		step := fmt.Sprintf("%s %s", method, target)
		if code != status {
			t.Fatalf("%s: status %d, want %d\nrequest:\n%s\nresponse:\n%s", step, code, status, reqBody, got)
		}
		if status == http.StatusNoContent {
			if len(bytes.TrimSpace(got)) != 0 {
				t.Fatalf("%s: 204 with a body: %s", step, got)
			}
			continue
		}
		if ct, _, _ := strings.Cut(ctype, ";"); ct != "application/scim+json" {
			t.Errorf("%s: Content-Type %q, want application/scim+json", step, ctype)
		}
		want := bytes.TrimSpace(resp.Data)
		if len(want) == 0 {
			continue
		}
		var w, g any
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatalf("%s: expected body: %v", step, err)
		}
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: response is not JSON: %v\n%s", step, err, got)
		}
		if err := match(w, g, "", vars); err != nil {
			t.Fatalf("%s: %v\nresponse:\n%s", step, err, got)
		}
	}
	return vars
}

// encodeQuery encodes a query written as the documentation shows it.
func encodeQuery(target string) string {
	p, q, ok := strings.Cut(target, "?")
	if !ok {
		return target
	}
	var parts []string
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil && !strings.Contains(v, " ") {
			v = uv
		}
		parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(v))
	}
	return p + "?" + strings.Join(parts, "&")
}

func do(t testing.TB, h http.Handler, client *http.Client, base, method, target, token, body string) (int, string, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if base == "" {
		req = httptest.NewRequest(method, target, rd)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	if base == "" {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// match checks that got holds want (see the package doc).
func match(want, got any, at string, vars map[string]string) error {
	if s, ok := want.(string); ok && strings.Contains(s, "${") {
		gs, ok := got.(string)
		if !ok {
			return fmt.Errorf("%s: %v, want a string (%s)", at, got, s)
		}
		if s == "${_}" {
			return nil
		}
		if m := placeholder.FindStringSubmatch(s); m != nil && m[0] == s {
			if v, bound := vars[m[1]]; bound {
				if gs != v {
					return fmt.Errorf("%s: %q, want %s = %q", at, gs, s, v)
				}
				return nil
			}
			if gs == "" {
				return fmt.Errorf("%s: empty, want a value for %s", at, s)
			}
			vars[m[1]] = gs
			return nil
		}
		expanded := placeholder.ReplaceAllStringFunc(s, func(m string) string { return vars[m[2:len(m)-1]] })
		if gs != expanded {
			return fmt.Errorf("%s: %q, want %q", at, gs, expanded)
		}
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v, want an object", at, got)
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			gv, present := g[k]
			if w[k] == "${absent}" {
				if present {
					return fmt.Errorf("%s.%s: present (%v), want it absent", at, k, gv)
				}
				continue
			}
			if !present {
				return fmt.Errorf("%s.%s: absent", at, k)
			}
			if err := match(w[k], gv, at+"."+k, vars); err != nil {
				return err
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: %v, want an array", at, got)
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: %d elements, want %d", at, len(g), len(w))
		}
		for i := range w {
			if err := match(w[i], g[i], fmt.Sprintf("%s[%d]", at, i), vars); err != nil {
				return err
			}
		}
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Errorf("%s: %v, want %v", at, got, want)
		}
	}
	return nil
}
