package scim

import (
	"context"
	"net/http"
	"slices"
	"strings"
)

type clientKey struct{}

func withClient(ctx context.Context, c Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

func clientOf(ctx context.Context) Client {
	c, _ := ctx.Value(clientKey{}).(Client)
	return c
}

// userJSON is a User resource as served.
type userJSON struct {
	Schemas     []string    `json:"schemas"`
	ID          string      `json:"id"`
	ExternalID  string      `json:"externalId,omitempty"`
	UserName    string      `json:"userName"`
	Name        *nameJSON   `json:"name,omitempty"`
	DisplayName string      `json:"displayName,omitempty"`
	Active      bool        `json:"active"`
	Emails      []emailJSON `json:"emails,omitempty"`
	Groups      []refJSON   `json:"groups"`
	Meta        metaJSON    `json:"meta"`
}

type nameJSON struct {
	GivenName  string `json:"givenName,omitempty"`
	FamilyName string `json:"familyName,omitempty"`
}

type emailJSON struct {
	Value   string `json:"value"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

type refJSON struct {
	Value   string `json:"value"`
	Ref     string `json:"$ref,omitempty"`
	Display string `json:"display,omitempty"`
}

type metaJSON struct {
	ResourceType string `json:"resourceType"`
	Created      string `json:"created,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
	Location     string `json:"location,omitempty"`
}

// scimView is a user's SCIM attributes: as a SCIM client gave them, or,
// for a user added otherwise, their email as userName and email.
func scimView(u *User) *User {
	if u.Provisioned {
		return u
	}
	c := *u
	c.UserName = u.Email
	c.Emails = []Email{{Value: u.Email, Type: "work", Primary: true}}
	return &c
}

func (h *Handler) userJSON(r *request, u *User) userJSON {
	v := scimView(u)
	j := userJSON{Schemas: []string{userSchema}, ID: u.ID, ExternalID: v.ExternalID, UserName: v.UserName, DisplayName: v.DisplayName,
		Active: u.Active, Groups: []refJSON{},
		Meta: metaJSON{ResourceType: "User", Created: timeOf(u.Created), LastModified: timeOf(u.Updated), Location: h.base(r) + "/Users/" + u.ID}}
	if v.GivenName != "" || v.FamilyName != "" {
		j.Name = &nameJSON{GivenName: v.GivenName, FamilyName: v.FamilyName}
	}
	for _, e := range v.Emails {
		j.Emails = append(j.Emails, emailJSON(e))
	}
	for _, g := range u.Groups {
		j.Groups = append(j.Groups, refJSON{Value: g.ID, Ref: h.base(r) + "/Groups/" + g.ID, Display: g.DisplayName})
	}
	return j
}

// userView is a user as filters see it.
func userView(u *User) view {
	v := scimView(u)
	emails := []element{}
	for _, e := range v.Emails {
		emails = append(emails, emailElement(e))
	}
	return view{
		"id": {{"": u.ID}}, "username": {{"": v.UserName}}, "externalid": {{"": v.ExternalID}},
		"displayname": {{"": v.DisplayName}}, "emails": emails, "active": {{"": map[bool]string{true: "true", false: "false"}[u.Active]}},
	}
}

var userFilterAttrs = map[string][]string{
	"id": {""}, "username": {""}, "externalid": {""}, "displayname": {""}, "active": {""},
	"emails": {"value", "type", "primary"},
}

func (h *Handler) listUsers(w http.ResponseWriter, r *request) error {
	_, p, terms, err := listQuery(r, userFilterAttrs, "users")
	if err != nil {
		return err
	}
	users, err := h.b.Users()
	if err != nil {
		return err
	}
	slices.SortFunc(users, func(a, b *User) int { return strings.Compare(a.ID, b.ID) })
	out := []userJSON{}
	for _, u := range users {
		if terms == nil || userView(u).match(terms) {
			out = append(out, h.userJSON(r, u))
		}
	}
	writeJSON(w, http.StatusOK, listResponse(out, p))
	return nil
}

// UserGetter is what a Backend may also offer: the user with this ID,
// read alone (ErrNotFound if none), rather than found in the list of
// every user.
type UserGetter interface {
	User(id string) (*User, error)
}

// user finds a user by ID.
func (h *Handler) user(id string) (*User, error) {
	if g, ok := h.b.(UserGetter); ok {
		return g.User(id) // ErrNotFound: 404
	}
	users, err := h.b.Users()
	return byID(users, err, func(u *User) string { return u.ID }, id, "user")
}

func (h *Handler) getUser(w http.ResponseWriter, r *request) error {
	if _, err := query(r, "attributes", "excludedAttributes"); err != nil {
		return err
	}
	u, err := h.user(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.userJSON(r, u))
	return nil
}

func (h *Handler) createUser(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	in, err := h.parseWholeUser(b)
	if err != nil {
		return err
	}
	u := &User{Provisioned: true, Active: true}
	applyUserInput(u, in)
	if err := derive(u, h.lf); err != nil {
		return err
	}
	if h.lf.kind == "attribute" && u.Login == "" {
		return badRequest("invalidValue", "User: %s gives the login (loginFrom), and it is missing", h.lf.raw)
	}
	if err := checkLogin(u.Login, h.lf); err != nil {
		return err
	}
	created, err := h.b.CreateUser(r.actor(), u)
	if err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM user created", "client", r.client.Name, "id", created.ID, "email", created.Email, "login", created.Login, "active", created.Active)
	w.Header().Set("Location", h.base(r)+"/Users/"+created.ID)
	writeJSON(w, http.StatusCreated, h.userJSON(r, created))
	return nil
}

// update changes a user with f, deriving email and login again if what
// they come from changed, and answers with the user.
func (h *Handler) update(w http.ResponseWriter, r *request, f func(u *User) error) error {
	id := r.PathValue("id")
	var before *User
	u, err := h.b.UpdateUser(r.actor(), id, func(u *User) error {
		c := *u
		before = &c
		if !u.Provisioned {
			v := scimView(u)
			u.UserName, u.Emails, u.Provisioned = v.UserName, v.Emails, true
		}
		src := u.sources()
		if err := f(u); err != nil {
			return err
		}
		if u.sources() != src {
			login := u.Login
			if err := derive(u, h.lf); err != nil {
				return err
			}
			if h.lf.kind == "attribute" {
				u.Login = login
			}
		}
		if u.Login != before.Login {
			return checkLogin(u.Login, h.lf)
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.cfg.Log.Info("SCIM user changed", "client", r.client.Name, "id", u.ID, "email", u.Email, "login", u.Login, "active", u.Active,
		"was_active", before != nil && before.Active)
	writeJSON(w, http.StatusOK, h.userJSON(r, u))
	return nil
}

func (h *Handler) putUser(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	in, err := h.parseWholeUser(b)
	if err != nil {
		return err
	}
	return h.update(w, r, func(u *User) error {
		applyUserInput(u, in)
		return nil
	})
}

func (h *Handler) patchUser(w http.ResponseWriter, r *request) error {
	b, err := body(r)
	if err != nil {
		return err
	}
	ops, err := parsePatch(b)
	if err != nil {
		return err
	}
	return h.update(w, r, func(u *User) error { return applyUserOps(u, ops, h.lf) })
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	if err := h.b.DeleteUser(r.actor(), id); err != nil {
		return err
	}
	h.cfg.Log.Warn("SCIM user deleted", "client", r.client.Name, "id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseWholeUser parses the body of a POST or PUT: a whole user, which
// must have a userName.
func (h *Handler) parseWholeUser(b []byte) (*userInput, error) {
	in, err := parseUser(b, h.lf)
	if err != nil {
		return nil, err
	}
	if in.userName == nil || *in.userName == "" {
		return nil, badRequest("invalidValue", "User: userName is required")
	}
	return in, nil
}

// systemLogins are accounts of the operating systems and images devid's
// hosts run, which no IdP may give a person as their login: with a policy
// line such as `* login:{account}`, login:root would be root everywhere.
var systemLogins = map[string]bool{
	"root": true, "toor": true, "admin": true, "administrator": true, "daemon": true, "bin": true, "sys": true,
	"sync": true, "games": true, "man": true, "lp": true, "mail": true, "news": true, "uucp": true, "proxy": true,
	"www-data": true, "backup": true, "list": true, "irc": true, "gnats": true, "nobody": true, "nogroup": true,
	"sshd": true, "messagebus": true, "_apt": true, "tss": true, "polkitd": true, "syslog": true, "operator": true,
	"ubuntu": true, "debian": true, "ec2-user": true, "centos": true, "fedora": true, "cloud-user": true, "core": true,
	"postgres": true, "mysql": true, "git": true, "deploy": true, "ansible": true, "vagrant": true,
}

// checkLogin refuses a login an IdP gives that is a system account's name
// (systemLogins, or systemd-…): such an account is an operator's to hand
// out, with devid user add or an import.
func checkLogin(login string, lf loginFrom) error {
	if systemLogins[login] || strings.HasPrefix(login, "systemd-") {
		return badRequest("invalidValue", "User: login %q (from %s, loginFrom) is a system account's name, which devid does not take from an IdP: give the user another %s, or add them with devid user add", login, lf.source(), lf.source())
	}
	return nil
}
