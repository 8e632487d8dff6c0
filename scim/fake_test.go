package scim_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/scim"
)

// fake is an in-memory Backend with the inventory's rules that the
// service relies on: unique emails (in any case) and logins, logins of
// 1-32 name characters, members that are users. caserver's tests play
// the same sequences against the real inventory.
type fake struct {
	mu     sync.Mutex
	users  map[string]*scim.User
	groups map[string]*scim.Group
	next   int
	actors []string // who wrote, in order
}

func newFake() *fake {
	return &fake{users: map[string]*scim.User{}, groups: map[string]*scim.Group{}}
}

var fakeLoginRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$`)

func (f *fake) id(prefix string) string {
	f.next++
	return fmt.Sprintf("%s%04d", prefix, f.next)
}

func (f *fake) check(u *scim.User) error {
	if !fakeLoginRE.MatchString(u.Login) {
		return fmt.Errorf("%w: login: %q: want 1-32 characters", scim.ErrInvalid, u.Login)
	}
	for _, o := range f.users {
		if o.ID == u.ID {
			continue
		}
		if strings.EqualFold(o.Email, u.Email) {
			return fmt.Errorf("%w: email: user %s already exists", scim.ErrConflict, o.Email)
		}
		if o.Login == u.Login {
			return fmt.Errorf("%w: login: login %q already belongs to %s", scim.ErrConflict, u.Login, o.Email)
		}
	}
	return nil
}

func (f *fake) Users() ([]*scim.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*scim.User
	for _, u := range f.users {
		c := *u
		c.Groups = nil
		for _, g := range f.groups {
			if slices.ContainsFunc(g.Members, func(m scim.Member) bool { return m.ID == u.ID }) {
				c.Groups = append(c.Groups, scim.GroupRef{ID: g.ID, DisplayName: g.DisplayName})
			}
		}
		out = append(out, &c)
	}
	return out, nil
}

func (f *fake) Groups() ([]*scim.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*scim.Group
	for _, g := range f.groups {
		c := *g
		c.Members = nil
		for _, m := range g.Members {
			c.Members = append(c.Members, scim.Member{ID: m.ID, Display: f.users[m.ID].Email})
		}
		out = append(out, &c)
	}
	return out, nil
}

func (f *fake) CreateUser(actor string, u *scim.User) (*scim.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *u
	c.ID = f.id("u")
	if err := f.check(&c); err != nil {
		return nil, err
	}
	c.Created, c.Updated = time.Unix(1e9, 0), time.Unix(1e9, 0)
	f.users[c.ID] = &c
	f.actors = append(f.actors, actor)
	r := c
	return &r, nil
}

func (f *fake) UpdateUser(actor, id string, fn func(u *scim.User) error) (*scim.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.users[id]
	if !ok {
		return nil, fmt.Errorf("%w: no user with ID %q", scim.ErrNotFound, id)
	}
	c := *old
	c.Emails = slices.Clone(old.Emails)
	if err := fn(&c); err != nil {
		return nil, err
	}
	c.ID = id
	if err := f.check(&c); err != nil {
		return nil, err
	}
	f.users[id] = &c
	f.actors = append(f.actors, actor)
	r := c
	return &r, nil
}

func (f *fake) DeleteUser(actor, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[id]; !ok {
		return fmt.Errorf("%w: no user with ID %q", scim.ErrNotFound, id)
	}
	delete(f.users, id)
	for _, g := range f.groups {
		g.Members = slices.DeleteFunc(g.Members, func(m scim.Member) bool { return m.ID == id })
	}
	f.actors = append(f.actors, actor)
	return nil
}

func (f *fake) checkGroup(g *scim.Group) error {
	for _, o := range f.groups {
		if o.ID != g.ID && strings.EqualFold(o.DisplayName, g.DisplayName) {
			return fmt.Errorf("%w: group %q exists", scim.ErrConflict, o.DisplayName)
		}
	}
	for _, m := range g.Members {
		if f.users[m.ID] == nil {
			return fmt.Errorf("%w: members: no user with ID %q", scim.ErrInvalid, m.ID)
		}
	}
	return nil
}

func (f *fake) CreateGroup(actor string, g *scim.Group) (*scim.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *g
	c.ID = f.id("g")
	if err := f.checkGroup(&c); err != nil {
		return nil, err
	}
	f.groups[c.ID] = &c
	f.actors = append(f.actors, actor)
	r := c
	return &r, nil
}

func (f *fake) UpdateGroup(actor, id string, fn func(g *scim.Group) error) (*scim.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.groups[id]
	if !ok {
		return nil, fmt.Errorf("%w: no group %q", scim.ErrNotFound, id)
	}
	c := *old
	c.Members = slices.Clone(old.Members)
	if err := fn(&c); err != nil {
		return nil, err
	}
	c.ID = id
	if err := f.checkGroup(&c); err != nil {
		return nil, err
	}
	f.groups[id] = &c
	f.actors = append(f.actors, actor)
	r := c
	return &r, nil
}

func (f *fake) DeleteGroup(actor, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.groups[id]; !ok {
		return fmt.Errorf("%w: no group %q", scim.ErrNotFound, id)
	}
	delete(f.groups, id)
	f.actors = append(f.actors, actor)
	return nil
}
