package caserver

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/scim"
)

// scimPrefix is where the SCIM service is mounted.
const scimPrefix = "/scim/v2"

// scimBackend is package scim's Backend over the inventory: users by
// their stable IDs with their SCIM attributes, active as not disabled
// (a change of it off-boards through the inventory's hooks, which
// revocation holds), groups the inventory's.
type scimBackend struct{ inv scimInventory }

// scimInventory is what the SCIM service needs of the inventory (an
// *inventory.Store). Each change names a user or group by its stable ID,
// and the inventory finds and changes it under one lock: what it finds by
// ID cannot be someone else by the time it is changed.
type scimInventory interface {
	Users() ([]*inventory.User, error)
	UserByID(id string) (*inventory.User, error)
	Groups() ([]*inventory.Group, error)
	GroupsNamed(names []string) ([]*inventory.Group, error)
	CreateUser(actor string, u *inventory.User) (*inventory.User, error)
	ChangeUser(actor, id string, f func(u *inventory.User) error) (*inventory.User, error)
	DeleteUserByID(actor, id, reason string) (*inventory.UserDeletion, error)
	CreateGroup(actor string, g *inventory.Group, members []string) (*inventory.Group, error)
	ChangeGroup(actor, id string, f func(g *inventory.Group, members *[]string) error) (*inventory.Group, error)
	DeleteGroup(actor, id string) (*inventory.Group, error)
}

// newSCIM returns the SCIM service, or nil when no client is configured.
func (s *Server) newSCIM() (*scim.Handler, error) {
	clients, err := s.cfg.SCIM.clients()
	if err != nil || len(clients) == 0 {
		return nil, err
	}
	return scim.New(scim.Config{Prefix: scimPrefix, Clients: clients, LoginFrom: s.cfg.SCIM.LoginFrom, Log: s.log}, scimBackend{s.inv})
}

// backendError is an inventory refusal as package scim reads it.
type backendError struct {
	kind error
	msg  string
}

func (e *backendError) Error() string { return e.msg }
func (e *backendError) Unwrap() error { return e.kind }

func scimErr(err error) error {
	var ie *inventory.Error
	if !errors.As(err, &ie) {
		return err
	}
	kind := scim.ErrInvalid
	switch {
	case errors.Is(err, inventory.ErrNotFound):
		kind = scim.ErrNotFound
	case errors.Is(err, inventory.ErrConflict):
		kind = scim.ErrConflict
	}
	return &backendError{kind: kind, msg: strings.TrimPrefix(ie.Error(), "inventory: ")}
}

func toSCIMUser(u *inventory.User, groups []*inventory.Group) *scim.User {
	su := &scim.User{ID: u.ID, Email: u.Email, Login: u.Login, Active: !u.Disabled, Created: u.Created, Updated: u.Updated}
	if id := u.SCIM; id != nil {
		su.Provisioned = true
		su.UserName, su.ExternalID, su.DisplayName, su.GivenName, su.FamilyName = id.UserName, id.ExternalID, id.DisplayName, id.GivenName, id.FamilyName
		for _, e := range id.Emails {
			su.Emails = append(su.Emails, scim.Email(e))
		}
	}
	for _, g := range groups {
		if slices.Contains(u.Groups, g.Name) {
			su.Groups = append(su.Groups, scim.GroupRef{ID: g.ID, DisplayName: g.DisplayName})
		}
	}
	return su
}

// fromSCIMUser sets what the service may change of u: email, login,
// status (with the reason, the client) and SCIM attributes.
func fromSCIMUser(u *inventory.User, su *scim.User, actor string) {
	u.Email, u.Login = su.Email, su.Login
	// An admin disabled the user (or a devid that did not record who
	// did): an IdP's active:true, which Okta sends with every profile
	// update, does not undo it. `devid user enable` does.
	adminDisabled := u.Disabled && !strings.HasPrefix(u.DisabledBy, "scim:")
	if u.Disabled != !su.Active && !adminDisabled {
		u.Disabled = !su.Active
		u.StatusReason = fmt.Sprintf("set active by %s", actor)
		if u.Disabled {
			u.StatusReason = fmt.Sprintf("set inactive by %s", actor)
		}
	}
	if su.Provisioned {
		id := &inventory.SCIMIdentity{UserName: su.UserName, ExternalID: su.ExternalID, DisplayName: su.DisplayName,
			GivenName: su.GivenName, FamilyName: su.FamilyName}
		for _, e := range su.Emails {
			id.Emails = append(id.Emails, inventory.SCIMEmail(e))
		}
		u.SCIM = id
	}
}

func (b scimBackend) Users() ([]*scim.User, error) {
	users, err := b.inv.Users()
	if err != nil {
		return nil, err
	}
	groups, err := b.inv.Groups()
	if err != nil {
		return nil, err
	}
	out := make([]*scim.User, len(users))
	for i, u := range users {
		out[i] = toSCIMUser(u, groups)
	}
	return out, nil
}

// User returns the user with this ID, read alone (package scim's
// optional single-user lookup).
func (b scimBackend) User(id string) (*scim.User, error) {
	u, err := b.inv.UserByID(id)
	if err != nil {
		return nil, scimErr(err)
	}
	groups, err := b.inv.GroupsNamed(u.Groups)
	if err != nil {
		return nil, err
	}
	return toSCIMUser(u, groups), nil
}

func (b scimBackend) CreateUser(actor string, su *scim.User) (*scim.User, error) {
	u := &inventory.User{Disabled: false}
	fromSCIMUser(u, su, actor)
	if u.Disabled {
		u.StatusReason = "created inactive by " + actor
	}
	created, err := b.inv.CreateUser(actor, u)
	if err != nil {
		return nil, scimErr(err)
	}
	return toSCIMUser(created, nil), nil
}

func (b scimBackend) UpdateUser(actor, id string, f func(*scim.User) error) (*scim.User, error) {
	// The user's groups alone, by name: not every group.
	var groups []*inventory.Group
	u, err := b.inv.ChangeUser(actor, id, func(u *inventory.User) error {
		var err error
		if groups, err = b.inv.GroupsNamed(u.Groups); err != nil {
			return err
		}
		su := toSCIMUser(u, groups)
		if err := f(su); err != nil {
			return err
		}
		fromSCIMUser(u, su, actor)
		return nil
	})
	if err != nil {
		return nil, scimErr(err)
	}
	return toSCIMUser(u, groups), nil
}

// DeleteUser deletes the user with this ID, found under the inventory's
// lock: a user renamed meanwhile is still the one deleted, and whoever was
// given their earlier email since is not.
func (b scimBackend) DeleteUser(actor, id string) error {
	_, err := b.inv.DeleteUserByID(actor, id, "deleted by "+actor)
	return scimErr(err)
}

func (b scimBackend) toSCIMGroup(g *inventory.Group) (*scim.Group, error) {
	users, err := b.inv.Users()
	if err != nil {
		return nil, err
	}
	return toSCIMGroup(g, users), nil
}

func toSCIMGroup(g *inventory.Group, users []*inventory.User) *scim.Group {
	sg := &scim.Group{ID: g.ID, DisplayName: g.DisplayName, ExternalID: g.ExternalID, Created: g.Created, Updated: g.Updated}
	for _, u := range users {
		if slices.Contains(u.Groups, g.Name) {
			sg.Members = append(sg.Members, scim.Member{ID: u.ID, Display: u.Email})
		}
	}
	slices.SortFunc(sg.Members, func(a, b scim.Member) int { return strings.Compare(a.ID, b.ID) })
	return sg
}

func memberIDs(ms []scim.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

func (b scimBackend) Groups() ([]*scim.Group, error) {
	groups, err := b.inv.Groups()
	if err != nil {
		return nil, err
	}
	users, err := b.inv.Users()
	if err != nil {
		return nil, err
	}
	out := make([]*scim.Group, len(groups))
	for i, g := range groups {
		out[i] = toSCIMGroup(g, users)
	}
	return out, nil
}

func (b scimBackend) CreateGroup(actor string, sg *scim.Group) (*scim.Group, error) {
	g, err := b.inv.CreateGroup(actor, &inventory.Group{DisplayName: sg.DisplayName, ExternalID: sg.ExternalID}, memberIDs(sg.Members))
	if err != nil {
		return nil, scimErr(err)
	}
	return b.toSCIMGroup(g)
}

func (b scimBackend) UpdateGroup(actor, id string, f func(*scim.Group) error) (*scim.Group, error) {
	g, err := b.inv.ChangeGroup(actor, id, func(g *inventory.Group, members *[]string) error {
		sg := &scim.Group{ID: g.ID, DisplayName: g.DisplayName, ExternalID: g.ExternalID, Created: g.Created, Updated: g.Updated}
		for _, m := range *members {
			sg.Members = append(sg.Members, scim.Member{ID: m})
		}
		if err := f(sg); err != nil {
			return err
		}
		g.DisplayName, g.ExternalID, *members = sg.DisplayName, sg.ExternalID, memberIDs(sg.Members)
		return nil
	})
	if err != nil {
		return nil, scimErr(err)
	}
	return b.toSCIMGroup(g)
}

func (b scimBackend) DeleteGroup(actor, id string) error {
	_, err := b.inv.DeleteGroup(actor, id)
	return scimErr(err)
}
