package scim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// loginFrom says where a user's login comes from (Config.LoginFrom).
type loginFrom struct {
	kind      string // userName-localpart, userName, email-localpart, or attribute
	urn, attr string // for an extension attribute, folded
	raw       string
}

// source names where the login comes from, for messages.
func (lf loginFrom) source() string {
	if lf.raw != "" {
		return lf.raw
	}
	if lf.kind != "" {
		return lf.kind
	}
	return LoginUserNameLocalPart
}

// Login sources.
const (
	LoginUserNameLocalPart = "userName-localpart" // the default
	LoginUserName          = "userName"
	LoginEmailLocalPart    = "email-localpart"
)

// CheckLoginFrom checks a Config.LoginFrom: "" (userName-localpart),
// userName-localpart, userName, email-localpart, or the full path of a
// string attribute of an extension schema (URN:ATTRIBUTE, e.g.
// urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber).
func CheckLoginFrom(s string) error {
	_, err := parseLoginFrom(s)
	return err
}

func parseLoginFrom(s string) (loginFrom, error) {
	switch s {
	case "", LoginUserNameLocalPart:
		return loginFrom{kind: LoginUserNameLocalPart, raw: LoginUserNameLocalPart}, nil
	case LoginUserName, LoginEmailLocalPart:
		return loginFrom{kind: s, raw: s}, nil
	}
	if len(s) > 4 && strings.EqualFold(s[:4], "urn:") {
		p, err := parseAttrPath(s)
		if err == nil && p.sub == "" && p.urn != strings.ToLower(userSchema) {
			return loginFrom{kind: "attribute", urn: p.urn, attr: p.name, raw: s}, nil
		}
	}
	return loginFrom{}, fmt.Errorf("scim: loginFrom %q: want userName-localpart, userName, email-localpart, or an extension schema's attribute (URN:ATTRIBUTE)", s)
}

// sources are what a user's email and login come from, to tell whether a
// write changed them.
func (u *User) sources() string {
	b, _ := json.Marshal([]any{u.UserName, u.Emails})
	return string(b)
}

// derive sets a user's email (the userName if it is an email, else the
// primary email, else the work one, else the first) and, unless the login
// comes from an extension attribute (set as it is parsed), their login.
func derive(u *User, lf loginFrom) error {
	switch {
	case isEmail(u.UserName):
		u.Email = u.UserName
	default:
		e := pickEmail(u.Emails)
		if e == "" {
			return badRequest("invalidValue", "userName %q is not an email address, and emails has none: devid needs the user's email", u.UserName)
		}
		if !isEmail(e) {
			return badRequest("invalidValue", "email %q is not a plain email address (user@domain)", e)
		}
		u.Email = e
	}
	local := func(s string) string {
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			s = s[:i]
		}
		return strings.ToLower(s)
	}
	switch lf.kind {
	case LoginUserNameLocalPart:
		u.Login = local(u.UserName)
	case LoginUserName:
		u.Login = strings.ToLower(u.UserName)
	case LoginEmailLocalPart:
		u.Login = local(u.Email)
	}
	return nil
}

func pickEmail(es []Email) string {
	for _, pick := range []func(Email) bool{
		func(e Email) bool { return e.Primary },
		func(e Email) bool { return strings.EqualFold(e.Type, "work") },
		func(Email) bool { return true },
	} {
		for _, e := range es {
			if pick(e) {
				return e.Value
			}
		}
	}
	return ""
}

// applyUserInput sets what a User body gives (PUT, POST); what it does
// not give is kept.
func applyUserInput(u *User, in *userInput) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&u.UserName, in.userName)
	set(&u.ExternalID, in.externalID)
	set(&u.DisplayName, in.displayName)
	set(&u.GivenName, in.givenName)
	set(&u.FamilyName, in.familyName)
	set(&u.Login, in.login)
	if in.emails != nil {
		u.Emails = slices.Clone(*in.emails)
	}
	if in.active != nil {
		u.Active = *in.active
	}
}

// applyUserOps applies PATCH operations to u, in order.
func applyUserOps(u *User, ops []patchOp, lf loginFrom) error {
	for i, op := range ops {
		if err := forEachTarget(op, i, func(p path, value json.RawMessage) error { return patchUser(u, op.op, p, value, lf) }); err != nil {
			return err
		}
	}
	return nil
}

// forEachTarget calls f with the operation's path and value, or, for an
// operation without a path, with each member of its value object as the
// path (Entra ID gives "name.givenName" and URN-prefixed names; an
// extension schema's object stands for its attributes).
func forEachTarget(op patchOp, i int, f func(p path, value json.RawMessage) error) error {
	at := fmt.Sprintf("Operations[%d]", i)
	if op.path != nil {
		if err := f(*op.path, op.value); err != nil {
			return prefixed(at+": "+op.path.attr.raw, err)
		}
		return nil
	}
	o, err := subObject(op.value, at+".value")
	if err != nil {
		return badRequest("invalidValue", "%s: %s without a path needs an object value", at, op.op)
	}
	for _, k := range o.order {
		name, v := o.names[k], o.vals[k]
		if strings.HasPrefix(k, "urn:") && !strings.HasPrefix(k, strings.ToLower(userSchema)+":") && !strings.HasPrefix(k, strings.ToLower(groupSchema)+":") {
			if ext, err := subObject(v, at+".value."+name); err == nil {
				for _, ek := range ext.order {
					p, err := parsePath(name + ":" + ext.names[ek])
					if err != nil {
						return badRequest("invalidPath", "%s: %v", at, err)
					}
					if err := f(p, ext.vals[ek]); err != nil {
						return prefixed(at+": "+p.attr.raw, err)
					}
				}
				continue
			}
		}
		p, err := parsePath(name)
		if err != nil {
			return badRequest("invalidPath", "%s: value: %v", at, err)
		}
		if err := f(p, v); err != nil {
			return prefixed(at+": "+name, err)
		}
	}
	return nil
}

// prefixed puts where into a 400's detail.
func prefixed(where string, err error) error {
	if e, ok := err.(*Error); ok {
		c := *e
		c.Detail = where + ": " + e.Detail
		return &c
	}
	return err
}

// patchUser applies one operation to one attribute of u.
func patchUser(u *User, op string, p path, value json.RawMessage, lf loginFrom) error {
	if p.attr.urn != "" && p.attr.urn != strings.ToLower(userSchema) {
		if lf.kind == "attribute" && p.attr.urn == lf.urn && p.attr.name == lf.attr {
			if op == "remove" {
				return badRequest("mutability", "the login comes from this attribute (loginFrom): it cannot be removed")
			}
			s, err := str(value, "value")
			if err != nil {
				return err
			}
			u.Login = s
		}
		return nil // an extension's attribute: not kept
	}
	if p.attr.urn == strings.ToLower(groupSchema) {
		return badRequest("invalidPath", "a Group attribute on a User")
	}
	setStr := func(dst *string, required bool) error {
		if p.elem != nil || p.attr.sub != "" {
			return badRequest("invalidPath", "%s has no sub-attributes", p.attr.name)
		}
		if op == "remove" {
			if required {
				return badRequest("mutability", "%s is required: it cannot be removed", p.attr.name)
			}
			*dst = ""
			return nil
		}
		s, err := str(value, "value")
		if err != nil {
			return err
		}
		if required && s == "" {
			return badRequest("invalidValue", "%s cannot be empty", p.attr.name)
		}
		*dst = s
		return nil
	}
	switch p.attr.name {
	case "active":
		if p.elem != nil || p.attr.sub != "" {
			return badRequest("invalidPath", "active has no sub-attributes")
		}
		if op == "remove" {
			return badRequest("mutability", "active cannot be removed: replace it with true or false")
		}
		b, err := boolean(value, "value")
		if err != nil {
			return err
		}
		u.Active = b
	case "username":
		return setStr(&u.UserName, true)
	case "externalid":
		return setStr(&u.ExternalID, false)
	case "displayname":
		return setStr(&u.DisplayName, false)
	case "name":
		return patchName(u, op, p, value)
	case "emails":
		return patchEmails(u, op, p, value)
	case "groups":
		return badRequest("mutability", "a user's groups are read-only: set group membership on /Groups")
	case "id":
		s, err := str(value, "value")
		if op == "remove" || err != nil || s != u.ID {
			return badRequest("mutability", "id is the server's: it cannot change")
		}
	case "schemas", "meta":
	default:
		if !ignoredUserAttrs[p.attr.name] {
			return badRequest("invalidPath", "unknown attribute %q", p.attr.raw)
		}
	}
	return nil
}

func patchName(u *User, op string, p path, value json.RawMessage) error {
	if p.elem != nil {
		return badRequest("invalidPath", "name is not multi-valued")
	}
	switch p.attr.sub {
	case "":
		if op == "remove" {
			u.GivenName, u.FamilyName = "", ""
			return nil
		}
		var in userInput
		if err := in.parseName(value); err != nil {
			return err
		}
		if op == "replace" && isNull(value) {
			u.GivenName, u.FamilyName = "", ""
		}
		applyUserInput(u, &in)
	case "givenname", "familyname":
		dst := &u.GivenName
		if p.attr.sub == "familyname" {
			dst = &u.FamilyName
		}
		if op == "remove" {
			*dst = ""
			return nil
		}
		s, err := str(value, "value")
		if err != nil {
			return err
		}
		*dst = s
	case "formatted", "middlename", "honorificprefix", "honorificsuffix":
	default:
		return badRequest("invalidPath", "name has no sub-attribute %q", p.attr.sub)
	}
	return nil
}

// patchEmails applies an operation to emails, or to the emails a
// [filter] selects (emails[type eq "work"].value).
func patchEmails(u *User, op string, p path, value json.RawMessage) error {
	if err := checkTerms([]term{{attr: attrPath{name: "emails", sub: p.attr.sub, raw: p.attr.raw}, elem: p.elem, value: new(string)}},
		map[string][]string{"emails": {"value", "type", "primary", "display"}}, "emails"); err != nil {
		return badRequest("invalidPath", "%v", err)
	}
	if p.elem == nil {
		if p.attr.sub != "" {
			return badRequest("invalidPath", "emails.%s: select the email with a filter (emails[type eq \"work\"].%s)", p.attr.sub, p.attr.sub)
		}
		if op == "remove" {
			u.Emails = nil
			return nil
		}
		es, err := parseEmails(value, "value")
		if err != nil {
			return err
		}
		if op == "replace" {
			u.Emails = es
		} else {
			u.Emails = append(u.Emails, es...)
		}
		return nil
	}
	match := func(e Email) bool {
		return elementMatch(emailElement(e), p.elem)
	}
	switch {
	case op == "remove" && p.attr.sub == "":
		u.Emails = slices.DeleteFunc(u.Emails, match)
	case op == "remove" && p.attr.sub == "value":
		u.Emails = slices.DeleteFunc(u.Emails, match)
	case p.attr.sub == "value":
		s, err := str(value, "value")
		if err != nil {
			return err
		}
		found := false
		for i := range u.Emails {
			if match(u.Emails[i]) {
				u.Emails[i].Value, found = s, true
			}
		}
		if !found {
			// As the filter says: emails[type eq "work"].value adds a
			// work email.
			e := Email{Value: s, Primary: !slices.ContainsFunc(u.Emails, func(e Email) bool { return e.Primary })}
			for _, t := range p.elem {
				switch t.attr.name {
				case "type":
					e.Type = *t.value
				case "primary":
					e.Primary = strings.EqualFold(*t.value, "true")
				}
			}
			u.Emails = append(u.Emails, e)
		}
	case p.attr.sub == "":
		es, err := parseEmails(value, "value")
		if err != nil {
			return err
		}
		u.Emails = append(slices.DeleteFunc(u.Emails, match), es...)
	default:
		return badRequest("invalidPath", "emails[…].%s: devid sets emails' value only", p.attr.sub)
	}
	return nil
}

func emailElement(e Email) element {
	return element{"value": e.Value, "type": e.Type, "primary": fmt.Sprint(e.Primary)}
}

// applyGroupOps applies PATCH operations to g, in order.
func applyGroupOps(g *Group, ops []patchOp) error {
	for i, op := range ops {
		if err := forEachTarget(op, i, func(p path, value json.RawMessage) error { return patchGroup(g, op.op, p, value) }); err != nil {
			return err
		}
	}
	return nil
}

func patchGroup(g *Group, op string, p path, value json.RawMessage) error {
	if p.attr.urn != "" && p.attr.urn != strings.ToLower(groupSchema) {
		return nil // an extension's attribute: not kept
	}
	switch p.attr.name {
	case "displayname":
		if p.elem != nil || p.attr.sub != "" {
			return badRequest("invalidPath", "displayName has no sub-attributes")
		}
		if op == "remove" {
			return badRequest("mutability", "displayName is required: it cannot be removed")
		}
		s, err := str(value, "value")
		if err != nil {
			return err
		}
		if s == "" {
			return badRequest("invalidValue", "displayName cannot be empty")
		}
		g.DisplayName = s
	case "externalid":
		if op == "remove" {
			g.ExternalID = ""
			return nil
		}
		s, err := str(value, "value")
		if err != nil {
			return err
		}
		g.ExternalID = s
	case "members":
		return patchMembers(g, op, p, value)
	case "id":
		s, err := str(value, "value")
		if op == "remove" || err != nil || s != g.ID {
			return badRequest("mutability", "id is the server's: it cannot change")
		}
	case "schemas", "meta":
	default:
		return badRequest("invalidPath", "unknown attribute %q", p.attr.raw)
	}
	return nil
}

func patchMembers(g *Group, op string, p path, value json.RawMessage) error {
	if p.attr.sub != "" && p.attr.sub != "value" || p.elem == nil && p.attr.sub != "" {
		return badRequest("invalidPath", "members: devid sets whole members (members, or members[value eq \"ID\"] to remove one)")
	}
	ids := func() []string {
		out := make([]string, len(g.Members))
		for i, m := range g.Members {
			out[i] = m.ID
		}
		return out
	}
	if p.elem != nil {
		if err := checkTerms([]term{{attr: attrPath{name: "members", raw: "members"}, elem: p.elem}}, map[string][]string{"members": {"value", "display", "type"}}, "members"); err != nil {
			return badRequest("invalidPath", "%v", err)
		}
		if op != "remove" {
			return badRequest("invalidPath", "members[…]: devid only removes the members a filter selects; add them with the path members")
		}
		g.Members = slices.DeleteFunc(g.Members, func(m Member) bool {
			return elementMatch(element{"value": m.ID, "display": m.Display, "type": "User"}, p.elem)
		})
		return nil
	}
	var given []string
	if value != nil && !(op == "remove" && isNull(value)) {
		var err error
		if given, err = parseMembers(value, "value"); err != nil {
			return err
		}
	}
	var next []string
	switch op {
	case "add":
		next = append(ids(), given...)
	case "replace":
		next = given
	case "remove":
		if value == nil || isNull(value) {
			next = nil // remove every member
		} else {
			next = slices.DeleteFunc(ids(), func(id string) bool { return slices.Contains(given, id) })
		}
	}
	slices.Sort(next)
	next = slices.Compact(next)
	g.Members = make([]Member, len(next))
	for i, id := range next {
		g.Members[i] = Member{ID: id}
	}
	return nil
}
