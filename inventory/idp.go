package inventory

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Users and groups as an IdP provisions them (package scim writes through
// these methods; caserver adapts them): users by their stable ID, their
// SCIM attributes kept as sent, and groups whose members are the users
// whose Groups hold the group's Name.

// SCIMIdentity is what an IdP's SCIM client said of a user, beside the
// email, login and status devid derives from it.
type SCIMIdentity struct {
	UserName    string      `json:"userName"`
	ExternalID  string      `json:"externalId,omitempty"`
	DisplayName string      `json:"displayName,omitempty"`
	GivenName   string      `json:"givenName,omitempty"`
	FamilyName  string      `json:"familyName,omitempty"`
	Emails      []SCIMEmail `json:"emails,omitempty"`
}

// SCIMEmail is one of a SCIM user's emails.
type SCIMEmail struct {
	Value   string `json:"value"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

// Group is a group an IdP pushed. Its members are the users whose Groups
// hold its Name: the group owns that name (a user who is not a member
// loses it when the group's members are set).
type Group struct {
	ID string `json:"id"` // stable, given when the group is created
	// Name is the group's name in users' Groups and in group:NAME
	// principals: its DisplayName made a principal (GroupName).
	Name        string    `json:"name"`
	DisplayName string    `json:"displayName"`
	ExternalID  string    `json:"externalId,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
}

var groupsTable = []byte("devid_groups")

// GroupSubject is the audit subject of a group.
func GroupSubject(name string) string { return "group:" + name }

// newID returns a new random ID: 32 hex digits.
func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("inventory: random ID: %v", err)) // crypto/rand does not fail
	}
	return hex.EncodeToString(b)
}

// withID gives a user read from a record written before users had IDs
// the ID derived from their email, and returns u.
func (u *User) withID() *User {
	if u.ID == "" && u.Email != "" {
		sum := sha256.Sum256([]byte("devid-user:" + foldEmail(u.Email)))
		u.ID = hex.EncodeToString(sum[:16])
	}
	return u
}

func cloneUser(u *User) *User {
	c := *u
	c.Groups = slices.Clone(u.Groups)
	if u.SCIM != nil {
		s := *u.SCIM
		s.Emails = slices.Clone(u.SCIM.Emails)
		c.SCIM = &s
	}
	return &c
}

// checkSCIM checks a user's SCIM attributes: each one line of text, at
// most 1024 bytes.
func checkSCIM(s *SCIMIdentity) *Error {
	if s == nil {
		return nil
	}
	fields := [][2]string{{"userName", s.UserName}, {"externalId", s.ExternalID}, {"displayName", s.DisplayName},
		{"name.givenName", s.GivenName}, {"name.familyName", s.FamilyName}}
	for _, e := range s.Emails {
		fields = append(fields, [2]string{"emails.value", e.Value}, [2]string{"emails.type", e.Type})
	}
	for _, f := range fields {
		if err := checkText(f[0], f[1]); err != nil {
			return err
		}
	}
	if s.UserName == "" {
		return invalid("userName", "empty")
	}
	return nil
}

func checkText(field, s string) *Error {
	if len(s) > MaxReasonLen {
		return invalid(field, "%d bytes long; at most %d", len(s), MaxReasonLen)
	}
	return checkLine(field, s)
}

// UserByID returns the user with this ID.
func (s *Store) UserByID(id string) (*User, error) { return s.reader().userByIDErr(id) }

func (t *txn) userByIDErr(id string) (*User, error) {
	u, err := t.userByID(id)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("no user with ID %q", id)}
	}
	return u, nil
}

// CreateUser adds a user with their SCIM attributes, as an IdP
// provisions them: u's email, login, groups, status and SCIM attributes
// (its ID and times are the store's). A user with the same email or login
// is a conflict.
func (s *Store) CreateUser(actor string, u *User) (*User, error) {
	nu, ferr := checkNewUser(NewUser{Email: u.Email, Login: u.Login, Groups: u.Groups})
	if ferr != nil {
		return nil, ferr
	}
	if ferr := checkSCIM(u.SCIM); ferr != nil {
		return nil, ferr
	}
	if err := CheckReason(u.StatusReason); err != nil {
		return nil, err
	}
	var c *User
	err := s.write(func(t *txn) error {
		if err := t.lazy().userFree(nu); err != nil {
			return err
		}
		now := s.clock()
		c = cloneUser(u)
		c.ID, c.Email, c.Login, c.Groups, c.Created, c.Updated = newID(), nu.Email, nu.Login, nu.Groups, now, now
		c.StatusChanged = time.Time{}
		if c.Disabled {
			c.StatusChanged = now
		}
		var w writer
		w.changeUser(UserChange{After: c}, "user.add", "")
		return s.commit(t, actor, now, &w)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ChangeUser changes the user with this ID as f says, and records it in
// the audit trail, in one transaction: f gets a copy of the user and may
// change their email, login, status (Disabled and StatusReason) and SCIM
// attributes; their ID, groups and times are the store's. A change of
// status is a disable or an enable (user.disable, user.enable: the
// BeforeUserCommit function revokes as for SetUserDisabled), anything else
// user.update; a new email is checked as AddUser checks it, moves the
// record, and is given to the devices the user owns (device.update). A new
// email or login is a rename (UserChange.Renames): the BeforeUserCommit
// function revokes, in the same transaction, every certificate naming the
// old ones. A change that changes nothing writes nothing.
//
// f runs once per attempt (see guard.go), on the user as that attempt read
// them.
func (s *Store) ChangeUser(actor, id string, f func(u *User) error) (*User, error) {
	var out *User
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.changeUser(t, actor, id, f)
		return err
	})
	return out, err
}

func (s *Store) changeUser(t *txn, actor, id string, f func(u *User) error) (*User, error) {
	snap := t.lazy()
	old, err := t.userByIDErr(id)
	if err != nil {
		return nil, err
	}
	u := cloneUser(old)
	if err := f(u); err != nil {
		return nil, err
	}
	u.ID, u.Groups, u.Created, u.Updated, u.StatusChanged, u.DisabledBy = old.ID, old.Groups, old.Created, old.Updated, old.StatusChanged, old.DisabledBy
	nu, ferr := checkNewUser(NewUser{Email: u.Email, Login: u.Login, Groups: u.Groups})
	if ferr != nil {
		return nil, ferr
	}
	if ferr := checkSCIM(u.SCIM); ferr != nil {
		return nil, ferr
	}
	if err := CheckReason(u.StatusReason); err != nil {
		return nil, err
	}
	if nu.Email != foldEmail(old.Email) {
		u.Email = nu.Email
		other, err := snap.user(nu.Email)
		if err != nil {
			return nil, err
		}
		if other != nil {
			return nil, &Error{Kind: ErrConflict, Field: "email", Msg: fmt.Sprintf("user %s already exists", other.Email)}
		}
	} else {
		u.Email = old.Email // as stored
	}
	if u.Login != old.Login {
		other, err := snap.login(u.Login)
		if err != nil {
			return nil, err
		}
		if other != "" && other != old.Email {
			return nil, &Error{Kind: ErrConflict, Field: "login", Msg: fmt.Sprintf("login %q already belongs to %s", u.Login, other)}
		}
	}
	if u.Disabled == old.Disabled {
		u.StatusReason = old.StatusReason
	}
	if string(mustJSON(u)) == string(mustJSON(old)) {
		return old, nil
	}
	now := s.clock()
	u.Updated = now
	action, reason := "user.update", ""
	if u.Disabled != old.Disabled {
		u.StatusChanged, u.DisabledBy = now, ""
		action, reason = "user.enable", u.StatusReason
		if u.Disabled {
			action, u.DisabledBy = "user.disable", actor
		}
	}
	owned, err := t.ownedBy(old.Email)
	if err != nil {
		return nil, err
	}
	var w writer
	if u.Email != old.Email {
		for _, d := range owned {
			nd := *d
			nd.Owner, nd.Updated = u.Email, now
			w.putDevice(d, &nd, "device.update", fmt.Sprintf("owner %s is now %s", old.Email, u.Email))
		}
	}
	w.changeUser(UserChange{Before: old, After: u, Devices: deviceIDs(owned)}, action, reason)
	return u, s.commit(t, actor, now, &w)
}

// GroupName makes a group's display name a name for users' Groups and
// group: principals: each run of characters other than A-Z a-z 0-9 . _ @ +
// - becomes one -, and what does not start with a letter or digit is cut
// ("Test SCIMv2" → "Test-SCIMv2", "Team (EU)" → "Team-EU"), at most 128
// characters.
func GroupName(displayName string) (string, error) {
	var b strings.Builder
	dash := false
	for _, r := range displayName {
		ok := r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@+-", r))
		switch {
		case ok:
			b.WriteRune(r)
			dash = r == '-'
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.TrimLeft(b.String(), "._@+-")
	if len(name) > 128 {
		name = name[:128]
	}
	name = strings.TrimRight(name, "-")
	if !groupRE.MatchString(name) {
		return "", invalid("displayName", "%q has no letters or digits to name a group by", displayName)
	}
	return name, nil
}

// Groups lists the groups, sorted by name.
func (s *Store) Groups() ([]*Group, error) {
	return listSorted(s, groupsTable, func(g *Group) string { return g.Name })
}

// GroupByID returns a group.
func (s *Store) GroupByID(id string) (*Group, error) {
	var g Group
	if err := s.get(groupsTable, id, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// Members returns the IDs of a group's members, sorted.
func Members(g *Group, users []*User) []string {
	var ids []string
	for _, u := range users {
		if slices.Contains(u.Groups, g.Name) {
			ids = append(ids, u.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// CreateGroup adds a group with these members (user IDs), and records it
// in the audit trail (group.add; each member's change user.update). Its
// name (GroupName of its display name) must not be another group's, in
// any case. A user who is not a member loses the name from their groups.
func (s *Store) CreateGroup(actor string, g *Group, members []string) (*Group, error) {
	return s.setGroup(actor, nil, func(ng *Group, ms *[]string) error {
		ng.DisplayName, ng.ExternalID, *ms = g.DisplayName, g.ExternalID, members
		return nil
	})
}

// ChangeGroup changes a group's display name, external ID and members
// (user IDs) as f says, in one transaction with its audit entries
// (group.update, and user.update for each user whose groups change). It
// returns the group and its members.
func (s *Store) ChangeGroup(actor, id string, f func(g *Group, members *[]string) error) (*Group, error) {
	old, err := s.GroupByID(id)
	if err != nil {
		return nil, err
	}
	return s.setGroup(actor, old, f)
}

// setGroup creates (old nil) or changes a group.
func (s *Store) setGroup(actor string, old *Group, f func(g *Group, members *[]string) error) (*Group, error) {
	var out *Group
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.setGroupTx(t, actor, old, f)
		return err
	})
	return out, err
}

func (s *Store) setGroupTx(t *txn, actor string, old *Group, f func(g *Group, members *[]string) error) (*Group, error) {
	snap, err := t.full(false)
	if err != nil {
		return nil, err
	}
	groups, err := s.Groups()
	if err != nil {
		return nil, err
	}
	users := snap.sortedUsers()
	g := &Group{}
	var members []string
	if old != nil {
		// Read again under the lock.
		if old, err = s.GroupByID(old.ID); err != nil {
			return nil, err
		}
		*g = *old
		members = Members(old, users)
	}
	if err := f(g, &members); err != nil {
		return nil, err
	}
	if old != nil {
		g.ID, g.Created, g.Updated = old.ID, old.Created, old.Updated
	}
	for _, t := range [][2]string{{"displayName", g.DisplayName}, {"externalId", g.ExternalID}} {
		if ferr := checkText(t[0], t[1]); ferr != nil {
			return nil, ferr
		}
	}
	if g.Name, err = GroupName(g.DisplayName); err != nil {
		return nil, err
	}
	for _, o := range groups {
		if (old == nil || o.ID != old.ID) && strings.EqualFold(o.Name, g.Name) {
			return nil, &Error{Kind: ErrConflict, Field: "displayName", Msg: fmt.Sprintf("group %q (%s) is already named %s", o.DisplayName, o.ID, o.Name)}
		}
	}
	want := map[string]bool{}
	byID := map[string]*User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	for _, id := range members {
		if byID[id] == nil {
			return nil, &Error{Kind: ErrInvalid, Field: "members", Msg: fmt.Sprintf("no user with ID %q", id)}
		}
		want[id] = true
	}
	now := s.clock()
	var w writer
	oldName := ""
	if old != nil {
		oldName = old.Name
	}
	added, removed := 0, 0
	for _, u := range users {
		groups := slices.DeleteFunc(slices.Clone(u.Groups), func(n string) bool { return n == oldName || n == g.Name })
		if want[u.ID] {
			groups = append(groups, g.Name)
		}
		slices.Sort(groups)
		groups = slices.Compact(groups)
		if slices.Equal(groups, u.Groups) {
			continue
		}
		had := slices.Contains(u.Groups, oldName) || slices.Contains(u.Groups, g.Name)
		why := fmt.Sprintf("group %s renamed %s", oldName, g.Name)
		switch {
		case want[u.ID] && !had:
			why, added = "added to group "+g.Name, added+1
		case !want[u.ID]:
			why, removed = "removed from group "+g.Name, removed+1
		}
		nu := cloneUser(u)
		nu.Groups, nu.Updated = groups, now
		w.changeUser(UserChange{Before: u, After: nu}, "user.update", why)
	}
	if old != nil && string(mustJSON(g)) == string(mustJSON(old)) && len(w.puts) == 0 {
		return old, nil // nothing to change
	}
	if old == nil {
		g.ID, g.Created = newID(), now
	}
	g.Updated = now
	action := "group.update"
	if old == nil {
		action = "group.add"
	}
	reason := ""
	if added+removed > 0 {
		reason = fmt.Sprintf("%d members added, %d removed", added, removed)
	}
	a := mustJSON(g)
	w.puts = append(w.puts, put{groupsTable, g.ID, a})
	if old != nil && groupKey(old.Name) != groupKey(g.Name) {
		w.puts = append(w.puts, put{table: indexTable, key: groupKey(old.Name)})
	}
	w.puts = append(w.puts, put{indexTable, groupKey(g.Name), []byte(g.ID)})
	w.audits = append(w.audits, AuditEntry{Action: action, Subject: GroupSubject(g.Name), Reason: reason, Before: optJSON(old), After: a})
	return g, s.commit(t, actor, now, &w)
}

// DeleteGroup removes a group, and its name from its members' groups
// (user.update each), with its audit entry (group.delete).
func (s *Store) DeleteGroup(actor, id string) (*Group, error) {
	var out *Group
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.deleteGroup(t, actor, id)
		return err
	})
	return out, err
}

func (s *Store) deleteGroup(t *txn, actor, id string) (*Group, error) {
	snap, err := t.full(false)
	if err != nil {
		return nil, err
	}
	g, err := s.GroupByID(id)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var w writer
	for _, u := range snap.sortedUsers() {
		if !slices.Contains(u.Groups, g.Name) {
			continue
		}
		nu := cloneUser(u)
		nu.Groups = slices.DeleteFunc(nu.Groups, func(n string) bool { return n == g.Name })
		nu.Updated = now
		w.changeUser(UserChange{Before: u, After: nu}, "user.update", "group "+g.Name+" deleted")
	}
	w.puts = append(w.puts, put{table: groupsTable, key: g.ID}, put{table: indexTable, key: groupKey(g.Name)})
	w.audits = append(w.audits, AuditEntry{Action: "group.delete", Subject: GroupSubject(g.Name), Before: mustJSON(g)})
	return g, s.commit(t, actor, now, &w)
}

// sortedUsers are the snapshot's users, sorted by email.
func (snap *snapshot) sortedUsers() []*User {
	out := make([]*User, 0, len(snap.users))
	for _, u := range snap.users {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *User) int { return strings.Compare(a.Email, b.Email) })
	return out
}
