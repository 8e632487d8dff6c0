package scim

import (
	"errors"
	"testing"
)

// The parsers of what a SCIM client sends: no input makes them panic,
// every refusal is a SCIM error (so a 400 that says why, never a 500), and
// what they accept can be applied without changing a resource's id. The
// seed corpora (testdata/fuzz) hold the requests of scimtest's recorded
// sequences.

func FuzzFilter(f *testing.F) {
	for _, s := range []string{`userName eq "a@example.com"`, `emails[type eq "work"].value eq "x"`, `externalId eq jyoung`,
		`id eq "g" and members[value eq "u"]`, `userName sw "a"`, `(a eq "b")`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		terms, err := parseFilter(s)
		var fe *filterError
		if err != nil {
			if !errors.As(err, &fe) {
				t.Fatalf("%q: error %T %v", s, err, err)
			}
		} else {
			if len(terms) == 0 {
				t.Fatalf("%q: accepted with no terms", s)
			}
			if checkTerms(terms, userFilterAttrs, "users") == nil {
				userView(sampleUser()).match(terms)
			}
			if checkTerms(terms, groupFilterAttrs, "groups") == nil {
				groupView(sampleGroup()).match(terms)
			}
		}
		if p, err := parsePath(s); err == nil {
			u := sampleUser()
			if err := patchUser(u, "replace", p, []byte(`"x"`), loginFrom{kind: LoginUserNameLocalPart}); err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Status != 400 {
					t.Fatalf("path %q: %T %v", s, err, err)
				}
			}
			if u.ID != "u1" {
				t.Fatalf("path %q changed the id", s)
			}
		} else if !errors.As(err, &fe) {
			t.Fatalf("path %q: error %T %v", s, err, err)
		}
	})
}

func sampleUser() *User {
	return &User{ID: "u1", Provisioned: true, UserName: "alice@example.com", Email: "alice@example.com", Login: "alice", Active: true,
		Emails: []Email{{Value: "alice@example.com", Type: "work", Primary: true}}}
}

func sampleGroup() *Group {
	return &Group{ID: "g1", DisplayName: "sre", Members: []Member{{ID: "u1", Display: "alice@example.com"}}}
}

func FuzzPatch(f *testing.F) {
	f.Add([]byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, err := parsePatch(body)
		if err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Status != 400 {
				t.Fatalf("%T %v", err, err)
			}
			return
		}
		u := sampleUser()
		for _, lf := range []loginFrom{{kind: LoginUserNameLocalPart}, {kind: "attribute", urn: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user", attr: "employeenumber"}} {
			if err := applyUserOps(u, ops, lf); err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Status != 400 {
					t.Fatalf("user: %T %v", err, err)
				}
			} else if err := derive(u, lf); err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Status != 400 {
					t.Fatalf("derive: %T %v", err, err)
				}
			}
		}
		g := sampleGroup()
		if err := applyGroupOps(g, ops); err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Status != 400 {
				t.Fatalf("group: %T %v", err, err)
			}
		}
		if u.ID != "u1" || g.ID != "g1" {
			t.Fatalf("an id changed: %q %q", u.ID, g.ID)
		}
	})
}

func FuzzUserBody(f *testing.F) {
	f.Add([]byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a@example.com","active":"False"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, lf := range []loginFrom{{kind: LoginUserNameLocalPart}, {kind: "attribute", urn: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user", attr: "employeenumber"}} {
			in, err := parseUser(body, lf)
			if err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Status != 400 {
					t.Fatalf("%T %v", err, err)
				}
				continue
			}
			u := &User{Active: true}
			applyUserInput(u, in)
			if err := derive(u, lf); err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Status != 400 {
					t.Fatalf("derive: %T %v", err, err)
				}
			}
		}
	})
}

func FuzzGroupBody(f *testing.F) {
	f.Add([]byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Test SCIMv2","members":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := parseGroup(body)
		if err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Status != 400 {
				t.Fatalf("%T %v", err, err)
			}
			return
		}
		if in.members != nil {
			for _, id := range *in.members {
				if id == "" {
					t.Fatal("an empty member id accepted")
				}
			}
		}
	})
}
