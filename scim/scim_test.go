package scim_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/scim"
	"github.com/devid-ssh/devid/scim/scimtest"
)

// newService returns the service over a fake, for a client "okta" with
// token, its logins from loginFrom.
func newService(t *testing.T, loginFrom string) (*scim.Handler, *fake, string) {
	t.Helper()
	token, sum, err := scim.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c, err := scim.ParseClient("okta", sum)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	h, err := scim.New(scim.Config{Prefix: "/scim/v2", Clients: []scim.Client{c}, LoginFrom: loginFrom,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, f)
	if err != nil {
		t.Fatal(err)
	}
	return h, f, token
}

// call sends one request and decodes the JSON answer (nil if none).
func call(t *testing.T, h http.Handler, token, method, target, body string) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: not JSON: %v\n%s", method, target, err, rec.Body)
		}
	}
	return rec.Code, out, rec.Header()
}

// TestSequences plays what Okta and Entra ID send (scimtest's recorded
// sequences) against the service over a fake store.
func TestSequences(t *testing.T) {
	seqs := scimtest.Sequences()
	if len(seqs) < 2 {
		t.Fatalf("%d sequences", len(seqs))
	}
	for name, data := range seqs {
		t.Run(name, func(t *testing.T) {
			h, f, token := newService(t, "")
			vars := scimtest.Run(t, h, nil, "", token, data)
			switch name {
			case "okta.txtar":
				u := f.users[vars["ALICE"]]
				if u == nil || u.Active || u.Email != "test.user@okta.local" || u.Login != "test.user" {
					t.Errorf("alice after the sequence: %+v", u)
				}
			case "entra.txtar":
				if _, ok := f.users[vars["U1"]]; ok {
					t.Error("the deleted user is still there")
				}
				if u := f.users[vars["JYOUNG"]]; u == nil || u.Email != "jyoung@testuser.com" || u.Login != "jyoung" {
					t.Errorf("jyoung: %+v", u)
				}
			}
			for _, a := range f.actors {
				if a != "scim:okta" {
					t.Errorf("written as %q", a)
				}
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	h, _, token := newService(t, "")
	for _, c := range []struct {
		header string
		want   int
	}{
		{"", 401}, {"Bearer", 401}, {"Bearer " + token + "x", 401}, {"Basic " + token, 401}, {"bearer " + token, 200}, {"Bearer " + token, 200},
	} {
		req := httptest.NewRequest("GET", "/scim/v2/Users", nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.header, rec.Code, c.want)
		}
		if c.want == 401 {
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") || !strings.Contains(rec.Body.String(), `"status": "401"`) {
				t.Errorf("401 without a challenge or SCIM body: %v %s", rec.Header(), rec.Body)
			}
		}
	}
	// Two clients: each is written down as itself.
	t2, sum2, _ := scim.NewToken()
	_, sum1, _ := scim.NewToken()
	c1, _ := scim.ParseClient("okta", sum1)
	c2, _ := scim.ParseClient("entra", sum2)
	f := newFake()
	h2, err := scim.New(scim.Config{Prefix: "/scim/v2", Clients: []scim.Client{c1, c2}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, f)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := call(t, h2, t2, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a@example.com"}`); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if !slices.Equal(f.actors, []string{"scim:entra"}) {
		t.Errorf("actors %q", f.actors)
	}
	for _, bad := range [][2]string{{"Okta", sum1}, {"okta", "abc"}, {"", sum1}, {"a b", sum1}} {
		if _, err := scim.ParseClient(bad[0], bad[1]); err == nil {
			t.Errorf("ParseClient(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if tok, sum, _ := scim.NewToken(); !strings.HasPrefix(tok, scim.TokenPrefix) || len(sum) != 64 || len(tok) < 50 {
		t.Errorf("token %q sum %q", tok, sum)
	}
}

// TestFilters: the filters devid answers, and refusals naming what is
// wrong, as invalidFilter.
func TestFilters(t *testing.T) {
	h, _, token := newService(t, "")
	for _, body := range []string{
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","externalId":"A1","displayName":"Alice A"}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob@example.com","emails":[{"value":"bob@example.com","type":"work","primary":true}],"active":false}`,
	} {
		if code, out, _ := call(t, h, token, "POST", "/scim/v2/Users", body); code != 201 {
			t.Fatalf("create: %d %v", code, out)
		}
	}
	for _, c := range []struct {
		filter string
		total  int // -1: refused
		detail string
	}{
		{`userName eq "alice@example.com"`, 1, ""},
		{`USERNAME EQ "ALICE@example.com"`, 1, ""},
		{`userName eq "nobody@example.com"`, 0, ""},
		{`externalId eq "A1"`, 1, ""},
		{`externalId eq "a1"`, 0, ""}, // caseExact
		{`externalId eq A1`, 1, ""},   // bare word
		{`displayName eq "alice a"`, 1, ""},
		{`userName eq "alice@example.com" and externalId eq "A1"`, 1, ""},
		{`userName eq "alice@example.com" and externalId eq "B"`, 0, ""},
		{`emails.value eq "bob@example.com"`, 1, ""},
		{`emails[type eq "work"].value eq "bob@example.com"`, 1, ""},
		{`emails[type eq "home"].value eq "bob@example.com"`, 0, ""},
		{`active eq false`, 1, ""},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob@example.com"`, 1, ""},
		{`userName sw "a"`, -1, `operator \"sw\" is not supported`},
		{`userName eq "a" or userName eq "b"`, -1, `\"or\" at 17 is not supported`},
		{`(userName eq "a")`, -1, "parentheses"},
		{`title eq "x"`, -1, `cannot filter users on \"title\"`},
		{`userName eq`, -1, "want a value"},
		{`userName eq "a`, -1, "not closed"},
		{`userName "a"`, -1, "want an operator"},
		{`userName pr`, -1, `operator \"pr\"`},
		{`emails[type eq "work"`, -1, "not closed"},
		{`userName eq "a" xor`, -1, `want and, not \"xor\"`},
		{``, -1, "want an attribute"},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "1"`, -1, "cannot filter users"},
	} {
		code, out, _ := call(t, h, token, "GET", "/scim/v2/Users?filter="+queryEscape(c.filter), "")
		switch {
		case c.total >= 0 && (code != 200 || out["totalResults"] != float64(c.total)):
			t.Errorf("filter %s: %d %v, want %d results", c.filter, code, out["totalResults"], c.total)
		case c.total < 0:
			b, _ := json.Marshal(out)
			if code != 400 || out["scimType"] != "invalidFilter" || !strings.Contains(string(b), c.detail) {
				t.Errorf("filter %s: %d %s, want 400 invalidFilter about %s", c.filter, code, b, c.detail)
			}
		}
	}
}

func queryEscape(s string) string {
	r := strings.NewReplacer("%", "%25", " ", "%20", `"`, "%22", "&", "%26", "+", "%2B", "#", "%23", "[", "%5B", "]", "%5D")
	return r.Replace(s)
}

func TestPaging(t *testing.T) {
	h, _, token := newService(t, "")
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if code, _, _ := call(t, h, token, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+n+`@example.com"}`); code != 201 {
			t.Fatal(code)
		}
	}
	var ids []string
	for _, c := range []struct {
		q                 string
		start, n, results int
	}{
		{"startIndex=1&count=2", 1, 2, 2}, {"startIndex=3&count=2", 3, 2, 2}, {"startIndex=5&count=2", 5, 1, 1},
		{"startIndex=9&count=2", 9, 0, 0}, {"count=0", 1, 0, 0}, {"startIndex=0&count=-4", 1, 0, 0}, {"", 1, 5, 5},
	} {
		code, out, _ := call(t, h, token, "GET", "/scim/v2/Users?"+c.q, "")
		res, _ := out["Resources"].([]any)
		if code != 200 || out["totalResults"] != 5.0 || out["startIndex"] != float64(c.start) || out["itemsPerPage"] != float64(c.n) || len(res) != c.results {
			t.Errorf("%s: %d %v", c.q, code, out)
		}
		if c.q != "" && c.start <= 5 {
			for _, r := range res {
				ids = append(ids, r.(map[string]any)["id"].(string))
			}
		}
	}
	// The pages are the whole list, once, in order.
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 5 {
		t.Errorf("pages gave %q", ids)
	}
	for _, q := range []string{"count=ten", "startIndex=1.5", "sortBy=userName", "count=1&count=2"} {
		if code, out, _ := call(t, h, token, "GET", "/scim/v2/Users?"+q, ""); code != 400 || out["scimType"] != "invalidValue" {
			t.Errorf("%s: %d %v", q, code, out)
		}
	}
}

// TestStrict: bodies are read strictly, and a refusal says what and
// where; nothing is written.
func TestStrict(t *testing.T) {
	h, f, token := newService(t, "")
	const user = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]`
	code, out, _ := call(t, h, token, "POST", "/scim/v2/Users", `{`+user+`,"userName":"alice@example.com"}`)
	if code != 201 {
		t.Fatal(code, out)
	}
	id := out["id"].(string)
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[` + ops + `]}`
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		scimType, detail   string
	}{
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com","favouriteColour":"blue"}`, 400, "invalidValue", `unknown attribute \"favouriteColour\"`},
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com","USERNAME":"c@example.com"}`, 400, "invalidSyntax", "given twice"},
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com"} {}`, 400, "invalidSyntax", "data after"},
		{"POST", "/Users", `{"userName":"b@example.com"}`, 400, "invalidSyntax", "no schemas"},
		{"POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"b@example.com"}`, 400, "invalidSyntax", "do not hold"},
		{"POST", "/Users", `{` + user + `,"userName":7}`, 400, "invalidValue", "userName: want a string"},
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com","active":"yes"}`, 400, "invalidValue", "active: want true or false"},
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com","emails":[{"type":"work"}]}`, 400, "invalidValue", "no value"},
		{"POST", "/Users", `{` + user + `,"userName":"b@example.com","name":{"nickname":"b"}}`, 400, "invalidValue", "name: unknown sub-attribute"},
		{"POST", "/Users", `{` + user + `,"displayName":"B"}`, 400, "invalidValue", "userName is required"},
		{"POST", "/Users", `{` + user + `,"userName":"bob"}`, 400, "invalidValue", "not an email address, and emails has none"},
		{"POST", "/Users", `{` + user + `,"userName":"bob+x@example.com"}`, 400, "invalidValue", "loginFrom"},
		{"POST", "/Users", `[1]`, 400, "invalidSyntax", "want a JSON object"},
		{"POST", "/Users", `{` + user + `,"userName":"ALICE@example.com"}`, 409, "uniqueness", "already exists"},
		{"PATCH", "/Users/" + id, patch(`{"op":"move","path":"active","value":false}`), 400, "invalidSyntax", `op \"move\"`},
		{"PATCH", "/Users/" + id, patch(`{"op":"remove"}`), 400, "noTarget", "remove without a path"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active"}`), 400, "invalidValue", "without a value"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":"maybe"}`), 400, "invalidValue", "Operations[0]: active: value: want true or false"},
		{"PATCH", "/Users/" + id, patch(`{"op":"add","path":"groups","value":[{"value":"g"}]}`), 400, "mutability", "read-only"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"id","value":"other"}`), 400, "mutability", "id is the server's"},
		{"PATCH", "/Users/" + id, patch(`{"op":"remove","path":"userName"}`), 400, "mutability", "required"},
		{"PATCH", "/Users/" + id, patch(`{"op":"remove","path":"active"}`), 400, "mutability", "cannot be removed"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"shoeSize","value":"9"}`), 400, "invalidPath", `unknown attribute \"shoeSize\"`},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"emails[type eq","value":"x"}`), 400, "invalidPath", "want a value after eq"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","value":"x"}`), 400, "invalidValue", "needs an object value"},
		{"PATCH", "/Users/" + id, patch(`{"op":"replace","path":"active","value":false,"extra":1}`), 400, "invalidSyntax", `unknown member \"extra\"`},
		{"PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}`, 400, "invalidSyntax", "non-empty"},
		{"PATCH", "/Users/nope", patch(`{"op":"replace","path":"active","value":false}`), 404, "", "no user"},
		{"PUT", "/Users/" + id, `{` + user + `,"displayName":"x"}`, 400, "invalidValue", "userName is required"},
		{"DELETE", "/Users", ``, 405, "", "allowed methods GET, POST"},
		{"GET", "/Machines", ``, 404, "", "no SCIM endpoint"},
		{"POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]}`, 400, "invalidValue", "displayName is required"},
		{"POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","members":[{"value":"nobody"}]}`, 400, "invalidValue", "no user with ID"},
		{"POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","owner":"x"}`, 400, "invalidValue", `unknown attribute \"owner\"`},
	} {
		before := len(f.actors)
		code, out, _ := call(t, h, token, c.method, "/scim/v2"+c.path, c.body)
		b, _ := json.Marshal(out)
		if code != c.status || c.scimType != "" && out["scimType"] != c.scimType || out["status"] != itoa(c.status) || !strings.Contains(string(b), c.detail) {
			t.Errorf("%s %s %s:\n  %d %s\n  want %d %s about %s", c.method, c.path, c.body, code, b, c.status, c.scimType, c.detail)
		}
		if len(f.actors) != before {
			t.Errorf("%s %s %s: a refused request wrote", c.method, c.path, c.body)
		}
	}
	// A wrong Content-Type.
	req := httptest.NewRequest("POST", "/scim/v2/Users", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 415 || rec.Header().Get("Content-Type") != "application/scim+json" {
		t.Errorf("text/plain: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestLoginFrom: each source of the login, and what changes it.
func TestLoginFrom(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + ent + `"],"userName":"Alice.Smith@Example.com",
		"emails":[{"value":"asmith@corp.example.com","type":"work"}],"` + ent + `":{"employeeNumber":"e1234","department":"x"}}`
	for _, c := range []struct{ from, login, email string }{
		{"", "alice.smith", "Alice.Smith@Example.com"},
		{"userName-localpart", "alice.smith", "Alice.Smith@Example.com"},
		{"userName", "", ""}, // @ is not allowed in a login
		{"email-localpart", "alice.smith", "Alice.Smith@Example.com"},
		{ent + ":employeeNumber", "e1234", "Alice.Smith@Example.com"},
	} {
		h, f, token := newService(t, c.from)
		code, out, _ := call(t, h, token, "POST", "/scim/v2/Users", body)
		if c.login == "" {
			if code != 400 {
				t.Errorf("loginFrom %q: %d %v, want a refusal", c.from, code, out)
			}
			continue
		}
		if code != 201 {
			t.Fatalf("loginFrom %q: %d %v", c.from, code, out)
		}
		u := f.users[out["id"].(string)]
		if u.Login != c.login || u.Email != c.email {
			t.Errorf("loginFrom %q: login %q email %q, want %q %q", c.from, u.Login, u.Email, c.login, c.email)
		}
	}
	// From the extension attribute: a PATCH of it (with a path, and as Entra
	// ID sends it, without) changes the login; a userName change does not.
	h, f, token := newService(t, ent+":employeeNumber")
	_, out, _ := call(t, h, token, "POST", "/scim/v2/Users", body)
	id := out["id"].(string)
	for _, c := range []struct{ op, login string }{
		{`{"op":"Replace","path":"` + ent + `:employeeNumber","value":"e5678"}`, "e5678"},
		{`{"op":"replace","value":{"` + ent + `:employeeNumber":"e9"}}`, "e9"},
		{`{"op":"replace","value":{"` + ent + `":{"employeeNumber":"e10"}}}`, "e10"},
		{`{"op":"replace","path":"userName","value":"bob@example.com"}`, "e10"},
	} {
		code, out, _ := call(t, h, token, "PATCH", "/scim/v2/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+c.op+`]}`)
		if code != 200 || f.users[id].Login != c.login {
			t.Errorf("%s: %d %v, login %q, want %q", c.op, code, out, f.users[id].Login, c.login)
		}
	}
	if f.users[id].Email != "bob@example.com" {
		t.Errorf("email %q", f.users[id].Email)
	}
	if code, _, _ := call(t, h, token, "POST", "/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"c@example.com"}`); code != 400 {
		t.Errorf("a user without the login attribute: %d", code)
	}
	if err := scim.CheckLoginFrom("nickName"); err == nil {
		t.Error("loginFrom nickName accepted")
	}
}

// TestSystemLogins: an IdP may not give a person a system account's name
// as their login (login:root would be root on every host under a
// `* login:{account}` policy), at creation or by a change.
func TestSystemLogins(t *testing.T) {
	h, f, token := newService(t, "")
	user := func(name string) string {
		return `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"` + name + `"}`
	}
	for _, name := range []string{"Root@example.com", "ubuntu@example.com", "systemd-network@example.com"} {
		code, out, _ := call(t, h, token, "POST", "/scim/v2/Users", user(name))
		if code != 400 || !strings.Contains(fmt.Sprint(out["detail"]), "system account") || !strings.Contains(fmt.Sprint(out["detail"]), "userName-localpart") {
			t.Errorf("POST %s: %d %v", name, code, out)
		}
	}
	if len(f.users) != 0 {
		t.Fatalf("users were created: %v", f.users)
	}
	code, out, _ := call(t, h, token, "POST", "/scim/v2/Users", user("alice@example.com"))
	if code != 201 {
		t.Fatalf("POST alice: %d %v", code, out)
	}
	id := out["id"].(string)
	code, out, _ = call(t, h, token, "PATCH", "/scim/v2/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":"root@example.com"}]}`)
	if code != 400 || f.users[id].Login != "alice" {
		t.Errorf("rename to root: %d %v, login %q", code, out, f.users[id].Login)
	}
}

// TestDiscovery: the discovery endpoints answer, as SCIM.
func TestDiscovery(t *testing.T) {
	h, _, token := newService(t, "")
	code, out, _ := call(t, h, token, "GET", "/scim/v2/ServiceProviderConfig", "")
	if code != 200 || out["patch"].(map[string]any)["supported"] != true || out["bulk"].(map[string]any)["supported"] != false {
		t.Errorf("ServiceProviderConfig: %d %v", code, out)
	}
	code, out, _ = call(t, h, token, "GET", "/scim/v2/ResourceTypes", "")
	if code != 200 || out["totalResults"] != 2.0 {
		t.Errorf("ResourceTypes: %d %v", code, out)
	}
	code, out, _ = call(t, h, token, "GET", "/scim/v2/ResourceTypes/User", "")
	if code != 200 || out["endpoint"] != "/Users" {
		t.Errorf("ResourceTypes/User: %d %v", code, out)
	}
	code, out, _ = call(t, h, token, "GET", "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group", "")
	if code != 200 || out["name"] != "Group" {
		t.Errorf("Schemas/…Group: %d %v", code, out)
	}
}
