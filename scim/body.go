package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// Schema URNs.
const (
	userSchema       = "urn:ietf:params:scim:schemas:core:2.0:User"
	groupSchema      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	enterpriseSchema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	patchOpSchema    = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	listSchema       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	errorSchema      = "urn:ietf:params:scim:api:messages:2.0:Error"
)

// Error is a SCIM error response (RFC 7644 §3.12).
type Error struct {
	Status   int
	ScimType string // invalidFilter, invalidSyntax, invalidPath, invalidValue, noTarget, mutability, uniqueness, tooMany; or ""
	Detail   string
}

func (e *Error) Error() string {
	if e.ScimType != "" {
		return fmt.Sprintf("scim: %d %s: %s", e.Status, e.ScimType, e.Detail)
	}
	return fmt.Sprintf("scim: %d: %s", e.Status, e.Detail)
}

func badRequest(scimType, format string, args ...any) *Error {
	return &Error{Status: 400, ScimType: scimType, Detail: fmt.Sprintf(format, args...)}
}

// object is a JSON object whose member names are folded to lower case
// (SCIM names are case-insensitive): a name given twice, in any case, is
// an error.
type object struct {
	vals  map[string]json.RawMessage
	names map[string]string // folded → as given
	order []string          // folded, in the order given
}

// parseObject reads one JSON object, and nothing after it.
func parseObject(data []byte, what string) (*object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	o, err := decodeObject(dec, what)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("invalidSyntax", "%s: data after the JSON object", what)
	}
	return o, nil
}

func decodeObject(dec *json.Decoder, what string) (*object, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badRequest("invalidSyntax", "%s: not JSON: %v", what, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, badRequest("invalidSyntax", "%s: want a JSON object", what)
	}
	o := &object{vals: map[string]json.RawMessage{}, names: map[string]string{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badRequest("invalidSyntax", "%s: not JSON: %v", what, err)
		}
		name := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, badRequest("invalidSyntax", "%s: %s: not JSON: %v", what, name, err)
		}
		k := strings.ToLower(name)
		if prev, dup := o.names[k]; dup {
			return nil, badRequest("invalidSyntax", "%s: %q given twice (as %q and %q; names are case-insensitive)", what, name, prev, name)
		}
		o.vals[k], o.names[k] = raw, name
		o.order = append(o.order, k)
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return nil, badRequest("invalidSyntax", "%s: not JSON: %v", what, err)
	}
	return o, nil
}

// subObject parses the member k of o as an object.
func subObject(raw json.RawMessage, what string) (*object, error) {
	return parseObject(raw, what)
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// str reads a string member; null is "" (absent: the caller checks).
func str(raw json.RawMessage, what string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badRequest("invalidValue", "%s: want a string, not %s", what, abbrev(raw))
	}
	return s, nil
}

// boolean reads a boolean, or a string "true" or "false" in any case (Entra
// ID sends "False").
func boolean(raw json.RawMessage, what string) (bool, error) {
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		switch strings.ToLower(s) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, badRequest("invalidValue", "%s: want true or false, not %s", what, abbrev(raw))
}

func abbrev(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 64 {
		s = s[:61] + "..."
	}
	return s
}

// checkSchemas checks that a body's schemas hold want.
func checkSchemas(o *object, want, what string) error {
	raw, ok := o.vals["schemas"]
	if !ok {
		return badRequest("invalidSyntax", "%s: no schemas (want one that holds %s)", what, want)
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return badRequest("invalidSyntax", "%s: schemas: want an array of strings", what)
	}
	for _, s := range list {
		if strings.EqualFold(s, want) {
			return nil
		}
	}
	return badRequest("invalidSyntax", "%s: schemas %q do not hold %s", what, list, want)
}

// Attributes of the core and enterprise User schemas devid accepts and
// does not keep (RFC 7643 §4.1, §4.3), by folded name. Entra ID sends the
// enterprise ones at the top level too, as null.
var ignoredUserAttrs = map[string]bool{
	"nickname": true, "profileurl": true, "title": true, "usertype": true, "preferredlanguage": true,
	"locale": true, "timezone": true, "password": true, "phonenumbers": true, "ims": true, "photos": true,
	"addresses": true, "entitlements": true, "roles": true, "x509certificates": true,
	"employeenumber": true, "costcenter": true, "organization": true, "division": true, "department": true, "manager": true,
}

// userInput is a User body (POST, PUT): nil is absent.
type userInput struct {
	userName, externalID, displayName *string
	givenName, familyName             *string
	emails                            *[]Email
	active                            *bool
	login                             *string // the LoginFrom extension attribute, if it is one and given
}

// parseUser reads a User body.
func parseUser(data []byte, lf loginFrom) (*userInput, error) {
	const what = "User"
	o, err := parseObject(data, what)
	if err != nil {
		return nil, err
	}
	if err := checkSchemas(o, userSchema, what); err != nil {
		return nil, err
	}
	in := &userInput{}
	for _, k := range o.order {
		raw, name := o.vals[k], o.names[k]
		var err error
		switch {
		case k == "schemas", k == "id", k == "meta", k == "groups":
			// id and meta are the server's, groups read-only (RFC 7644 §3.3: ignored).
		case k == "username":
			var s string
			if s, err = str(raw, name); err == nil {
				in.userName = &s
			}
		case k == "externalid":
			in.externalID, err = optStr(raw, name)
		case k == "displayname":
			in.displayName, err = optStr(raw, name)
		case k == "name":
			err = in.parseName(raw)
		case k == "emails":
			var es []Email
			if es, err = parseEmails(raw, name); err == nil {
				in.emails = &es
			}
		case k == "active":
			if !isNull(raw) {
				var b bool
				if b, err = boolean(raw, name); err == nil {
					in.active = &b
				}
			}
		case ignoredUserAttrs[k]:
		case strings.HasPrefix(k, "urn:"):
			err = in.parseExtension(k, raw, lf)
		default:
			err = badRequest("invalidValue", "User: unknown attribute %q (not one of the core or enterprise User schema's; an extension's attributes go in an object named by its schema URN)", name)
		}
		if err != nil {
			return nil, err
		}
	}
	return in, nil
}

func optStr(raw json.RawMessage, what string) (*string, error) {
	s, err := str(raw, what)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// parseName reads the name attribute: givenName and familyName kept,
// its other sub-attributes accepted.
func (in *userInput) parseName(raw json.RawMessage) error {
	if isNull(raw) {
		empty := ""
		in.givenName, in.familyName = &empty, &empty
		return nil
	}
	o, err := subObject(raw, "name")
	if err != nil {
		return err
	}
	for _, k := range o.order {
		var err error
		switch k {
		case "givenname":
			in.givenName, err = optStr(o.vals[k], "name."+o.names[k])
		case "familyname":
			in.familyName, err = optStr(o.vals[k], "name."+o.names[k])
		case "formatted", "middlename", "honorificprefix", "honorificsuffix":
			_, err = str(o.vals[k], "name."+o.names[k])
		default:
			err = badRequest("invalidValue", "name: unknown sub-attribute %q", o.names[k])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseExtension reads an extension schema's object: the LoginFrom
// attribute, if it is in it; the rest is accepted and not kept.
func (in *userInput) parseExtension(urn string, raw json.RawMessage, lf loginFrom) error {
	if isNull(raw) {
		return nil
	}
	o, err := subObject(raw, urn)
	if err != nil {
		return err
	}
	if lf.urn != urn {
		return nil
	}
	if v, ok := o.vals[lf.attr]; ok {
		in.login, err = optStr(v, urn+":"+o.names[lf.attr])
	}
	return err
}

// parseEmails reads emails: an array of objects with a value.
func parseEmails(raw json.RawMessage, what string) ([]Email, error) {
	if isNull(raw) {
		return []Email{}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		// One email alone, as an add may give it.
		e, err := parseEmail(raw, what)
		if err != nil {
			return nil, err
		}
		return []Email{e}, nil
	}
	out := []Email{}
	for i, item := range items {
		e, err := parseEmail(item, fmt.Sprintf("%s[%d]", what, i))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func parseEmail(raw json.RawMessage, what string) (Email, error) {
	var e Email
	o, err := subObject(raw, what)
	if err != nil {
		return e, err
	}
	for _, k := range o.order {
		v, name := o.vals[k], what+"."+o.names[k]
		var err error
		switch k {
		case "value":
			e.Value, err = str(v, name)
		case "type":
			e.Type, err = str(v, name)
		case "primary":
			if !isNull(v) {
				e.Primary, err = boolean(v, name)
			}
		case "display", "$ref":
			_, err = str(v, name)
		default:
			err = badRequest("invalidValue", "%s: unknown sub-attribute %q", what, o.names[k])
		}
		if err != nil {
			return e, err
		}
	}
	if e.Value == "" {
		return e, badRequest("invalidValue", "%s: no value", what)
	}
	return e, nil
}

// groupInput is a Group body (POST, PUT): nil is absent.
type groupInput struct {
	displayName, externalID *string
	members                 *[]string
}

func parseGroup(data []byte) (*groupInput, error) {
	const what = "Group"
	o, err := parseObject(data, what)
	if err != nil {
		return nil, err
	}
	if err := checkSchemas(o, groupSchema, what); err != nil {
		return nil, err
	}
	in := &groupInput{}
	for _, k := range o.order {
		raw, name := o.vals[k], o.names[k]
		var err error
		switch k {
		case "schemas", "id", "meta":
		case "displayname":
			var s string
			if s, err = str(raw, name); err == nil {
				in.displayName = &s
			}
		case "externalid":
			in.externalID, err = optStr(raw, name)
		case "members":
			var ms []string
			if ms, err = parseMembers(raw, name); err == nil {
				in.members = &ms
			}
		default:
			if !strings.HasPrefix(k, "urn:") {
				err = badRequest("invalidValue", "Group: unknown attribute %q", name)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return in, nil
}

// parseMembers reads members: objects whose value is a user's id (one
// object alone too).
func parseMembers(raw json.RawMessage, what string) ([]string, error) {
	if isNull(raw) {
		return []string{}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		items = []json.RawMessage{raw}
	}
	out := []string{}
	for i, item := range items {
		at := fmt.Sprintf("%s[%d]", what, i)
		o, err := subObject(item, at)
		if err != nil {
			return nil, err
		}
		id := ""
		for _, k := range o.order {
			v, name := o.vals[k], at+"."+o.names[k]
			switch k {
			case "value":
				id, err = str(v, name)
			case "display", "$ref", "type":
				_, err = str(v, name)
			default:
				err = badRequest("invalidValue", "%s: unknown sub-attribute %q", at, o.names[k])
			}
			if err != nil {
				return nil, err
			}
		}
		if id == "" {
			return nil, badRequest("invalidValue", "%s: no value (the member's id)", at)
		}
		out = append(out, id)
	}
	return out, nil
}

// patchOp is one operation of a PatchOp.
type patchOp struct {
	op    string // add, replace or remove
	path  *path  // nil: no path
	value json.RawMessage
}

// maxOperations bounds a PatchOp.
const maxOperations = 1000

// parsePatch reads a PatchOp body (RFC 7644 §3.5.2).
func parsePatch(data []byte) ([]patchOp, error) {
	const what = "PatchOp"
	o, err := parseObject(data, what)
	if err != nil {
		return nil, err
	}
	if err := checkSchemas(o, patchOpSchema, what); err != nil {
		return nil, err
	}
	for _, k := range o.order {
		if k != "schemas" && k != "operations" {
			return nil, badRequest("invalidSyntax", "PatchOp: unknown member %q (want schemas and Operations)", o.names[k])
		}
	}
	raw, ok := o.vals["operations"]
	if !ok {
		return nil, badRequest("invalidSyntax", "PatchOp: no Operations")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || len(items) == 0 {
		return nil, badRequest("invalidSyntax", "PatchOp: Operations: want a non-empty array")
	}
	if len(items) > maxOperations {
		return nil, &Error{Status: 400, ScimType: "tooMany", Detail: fmt.Sprintf("PatchOp: %d operations; at most %d", len(items), maxOperations)}
	}
	var ops []patchOp
	for i, item := range items {
		at := fmt.Sprintf("Operations[%d]", i)
		oo, err := subObject(item, at)
		if err != nil {
			return nil, err
		}
		var op patchOp
		for _, k := range oo.order {
			v, name := oo.vals[k], at+"."+oo.names[k]
			switch k {
			case "op":
				s, err := str(v, name)
				if err != nil {
					return nil, err
				}
				op.op = strings.ToLower(s)
			case "path":
				s, err := str(v, name)
				if err != nil {
					return nil, err
				}
				if s == "" {
					continue
				}
				p, err := parsePath(s)
				if err != nil {
					return nil, badRequest("invalidPath", "%s: %v", name, err)
				}
				op.path = &p
			case "value":
				op.value = v
			default:
				return nil, badRequest("invalidSyntax", "%s: unknown member %q (want op, path and value)", at, oo.names[k])
			}
		}
		switch op.op {
		case "add", "replace":
			if op.value == nil {
				return nil, badRequest("invalidValue", "%s: %s without a value", at, op.op)
			}
		case "remove":
			if op.path == nil {
				return nil, badRequest("noTarget", "%s: remove without a path", at)
			}
		case "":
			return nil, badRequest("invalidSyntax", "%s: no op", at)
		default:
			return nil, badRequest("invalidSyntax", "%s: op %q: want add, replace or remove", at, op.op)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// isEmail reports whether s is a plain email address (user@domain).
func isEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && a.Name == ""
}
