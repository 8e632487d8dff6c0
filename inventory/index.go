package inventory

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/smallstep/nosql/database"
)

// The index: records that let a write, or a lookup, about one device or
// user read that device or user and what its checks need, and nothing
// else, whatever the size of the inventory. Each is written in the
// transaction of the change it follows, under the same guards.
//
//	n:NAME            → device ID
//	s:SERIAL (upper)  → device ID
//	o:OWNER (lower)   → JSON array of the IDs of the devices it owns
//	e:EMAIL (lower)   → the user's email as stored (the key of its record)
//	l:LOGIN           → the user's email
//	u:USER-ID         → the user's email
//	t:DEVICE-ID       → JSON array of the hashes of the enrolment tokens
//	                    issued for the device, or that bound its TPM
//	g:GROUP (lower)   → the group's ID
//
// A key longer than the 255 bytes PostgreSQL's nosql table allows is the
// prefix, '#' and the SHA-256 of the value, in hex. Open checks the index
// against the tables and repairs it (a database an older devid-ca used).
var indexTable = []byte("devid_index")

// maxKey is the longest key nosql's PostgreSQL tables take.
const maxKey = 255

func idxKey(prefix, v string) string {
	if len(prefix)+len(v) <= maxKey {
		return prefix + v
	}
	sum := sha256.Sum256([]byte(v))
	return prefix + "#" + hex.EncodeToString(sum[:])
}

func nameKey(name string) string     { return idxKey("n:", name) }
func serialKey(serial string) string { return idxKey("s:", foldSerial(serial)) }
func ownerKey(email string) string   { return idxKey("o:", foldEmail(email)) }
func emailKey(email string) string   { return idxKey("e:", foldEmail(email)) }
func loginKey(login string) string   { return idxKey("l:", login) }
func userIDKey(id string) string     { return idxKey("u:", id) }
func tokensKey(id string) string     { return idxKey("t:", id) }
func groupKey(name string) string    { return idxKey("g:", strings.ToLower(name)) }

// idxString reads an index record holding one string ("" if none).
func (t *txn) idxString(key string) (string, error) {
	b, err := t.getRaw(indexTable, key)
	return string(b), err
}

// idxList reads an index record holding a list.
func (t *txn) idxList(key string) ([]string, error) {
	b, err := t.getRaw(indexTable, key)
	if err != nil || b == nil {
		return nil, err
	}
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("inventory: decode %s/%q: %w", indexTable, key, err)
	}
	return out, nil
}

// device reads a device by ID; nil if there is none.
func (t *txn) device(id string) (*Device, error) {
	var d Device
	err := t.get(devicesTable, id, &d)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// deviceByName reads the device with this name; nil if there is none.
func (t *txn) deviceByName(name string) (*Device, error) {
	id, err := t.idxString(nameKey(name))
	if err != nil || id == "" {
		return nil, err
	}
	d, err := t.device(id)
	if err != nil || d == nil || d.Name != name {
		return nil, err
	}
	return d, nil
}

// deviceBySerial reads the device with this serial (in any case); nil if
// there is none.
func (t *txn) deviceBySerial(serial string) (*Device, error) {
	if serial == "" {
		return nil, nil
	}
	id, err := t.idxString(serialKey(serial))
	if err != nil || id == "" {
		return nil, err
	}
	d, err := t.device(id)
	if err != nil || d == nil || foldSerial(d.Serial) != foldSerial(serial) {
		return nil, err
	}
	return d, nil
}

// deviceRef reads a device by ID or name, as Store.Device.
func (t *txn) deviceRef(ref string) (*Device, error) {
	var d *Device
	var err error
	if strings.HasPrefix(ref, "urn:") {
		d, err = t.device(ref)
	} else {
		d, err = t.deviceByName(ref)
	}
	if err != nil {
		return nil, err
	}
	if d == nil {
		if strings.HasPrefix(ref, "urn:") {
			return nil, &Error{Kind: ErrNotFound, Msg: "no device " + ref}
		}
		return nil, &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("no device with name %q", ref)}
	}
	return d, nil
}

// user reads a user by email, in any case; nil if there is none.
func (t *txn) user(email string) (*User, error) {
	stored, err := t.idxString(emailKey(email))
	if err != nil {
		return nil, err
	}
	if stored == "" {
		// Not in the index: the record under the folded email, as every
		// user added since emails are folded is stored (an index that
		// lacks it is repaired at the next Open).
		stored = foldEmail(email)
	}
	var u User
	err = t.get(usersTable, stored, &u)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if foldEmail(u.Email) != foldEmail(email) {
		return nil, nil
	}
	return u.withID(), nil
}

// loginOwner returns the email of the user with this login; "" if none.
func (t *txn) loginOwner(login string) (string, error) {
	email, err := t.idxString(loginKey(login))
	if err != nil || email == "" {
		return "", err
	}
	u, err := t.user(email)
	if err != nil || u == nil || u.Login != login {
		return "", err
	}
	return u.Email, nil
}

// userByID reads the user with this ID; nil if there is none.
func (t *txn) userByID(id string) (*User, error) {
	email, err := t.idxString(userIDKey(id))
	if err != nil || email == "" {
		return nil, err
	}
	u, err := t.user(email)
	if err != nil || u == nil || u.ID != id {
		return nil, err
	}
	return u, nil
}

// ownedBy reads the devices a user (email, as stored) owns, sorted by name.
func (t *txn) ownedBy(email string) ([]*Device, error) {
	ids, err := t.idxList(ownerKey(email))
	if err != nil {
		return nil, err
	}
	var out []*Device
	for _, id := range ids {
		d, err := t.device(id)
		if err != nil {
			return nil, err
		}
		if d != nil && d.Owner != "" && foldEmail(d.Owner) == foldEmail(email) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// tokensOf reads the enrolment tokens issued for a device or that bound
// its TPM, oldest first.
func (t *txn) tokensOf(id string) ([]*EnrolmentToken, error) {
	hashes, err := t.idxList(tokensKey(id))
	if err != nil {
		return nil, err
	}
	var out []*EnrolmentToken
	for _, h := range hashes {
		var tok EnrolmentToken
		err := t.get(tokensTable, h, &tok)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if tok.DeviceID == id || tok.BoundTo == id {
			out = append(out, &tok)
		}
	}
	slices.SortStableFunc(out, func(a, b *EnrolmentToken) int {
		if c := a.Issued.Compare(b.Issued); c != 0 {
			return c
		}
		return strings.Compare(a.Hash, b.Hash)
	})
	return out, nil
}

// indexPuts adds to w the index records its changes need: computed from
// the records as they were before the transaction (the first Before of
// each device or user) and as it leaves them.
func (t *txn) indexPuts(w *writer) error {
	// Devices: as they were, and as the transaction leaves them (nil:
	// deleted).
	initial, final := map[string]*Device{}, map[string]*Device{}
	var ids []string
	note := func(id string) {
		if _, ok := final[id]; !ok {
			if _, ok := initial[id]; !ok {
				ids = append(ids, id)
			}
		}
	}
	for _, c := range w.changes {
		if c.Before != nil {
			if _, ok := initial[c.Before.ID]; !ok {
				note(c.Before.ID)
				initial[c.Before.ID] = c.Before
				if _, ok := final[c.Before.ID]; !ok {
					final[c.Before.ID] = c.Before
				}
			}
		}
	}
	if w.tx != nil {
		for _, op := range w.tx.Operations {
			if op.Cmd == database.Delete && bytes.Equal(op.Bucket, devicesTable) {
				note(string(op.Key))
				final[string(op.Key)] = nil
			}
		}
	}
	for _, c := range w.changes {
		note(c.After.ID)
		if _, ok := initial[c.After.ID]; !ok {
			initial[c.After.ID] = nil
		}
		final[c.After.ID] = c.After
	}
	set := map[string]string{}
	del := map[string]bool{}
	owners := map[string]map[string]bool{} // owner key → device ID → owned
	for _, id := range ids {
		a, b := initial[id], final[id]
		if b != nil {
			set[nameKey(b.Name)] = b.ID
			if b.Serial != "" {
				set[serialKey(b.Serial)] = b.ID
			}
		}
		if a != nil {
			if b == nil || a.Name != b.Name {
				del[nameKey(a.Name)] = true
			}
			if a.Serial != "" && (b == nil || foldSerial(a.Serial) != foldSerial(b.Serial)) {
				del[serialKey(a.Serial)] = true
			}
		}
		ao, bo := "", ""
		if a != nil && a.Owner != "" {
			ao = ownerKey(a.Owner)
		}
		if b != nil && b.Owner != "" {
			bo = ownerKey(b.Owner)
		}
		if ao != bo || a == nil || b == nil {
			if ao != "" {
				if owners[ao] == nil {
					owners[ao] = map[string]bool{}
				}
				if _, ok := owners[ao][id]; !ok {
					owners[ao][id] = false
				}
			}
			if bo != "" {
				if owners[bo] == nil {
					owners[bo] = map[string]bool{}
				}
				owners[bo][id] = true
			}
		}
	}
	// Users, by ID.
	uinitial, ufinal := map[string]*User{}, map[string]*User{}
	var uids []string
	for _, c := range w.userChanges {
		var id string
		switch {
		case c.Before != nil:
			id = c.Before.withID().ID
		default:
			id = c.After.ID
		}
		if _, ok := uinitial[id]; !ok {
			uids = append(uids, id)
			uinitial[id] = c.Before
		}
		ufinal[id] = c.After
	}
	for _, id := range uids {
		a, b := uinitial[id], ufinal[id]
		if b != nil {
			set[emailKey(b.Email)] = b.Email
			set[loginKey(b.Login)] = b.Email
			set[userIDKey(b.withID().ID)] = b.Email
		}
		if a != nil {
			if b == nil || foldEmail(a.Email) != foldEmail(b.Email) {
				del[emailKey(a.Email)] = true
			}
			if b == nil || a.Login != b.Login {
				del[loginKey(a.Login)] = true
			}
			if b == nil {
				del[userIDKey(a.withID().ID)] = true
			}
		}
	}
	// Tokens.
	tokens := map[string][]string{}
	var tokenRecs [][]byte
	for _, p := range w.puts {
		if bytes.Equal(p.table, tokensTable) && p.value != nil {
			tokenRecs = append(tokenRecs, p.value)
		}
	}
	if w.tx != nil {
		for _, op := range w.tx.Operations {
			if op.Cmd == database.Set && bytes.Equal(op.Bucket, tokensTable) {
				tokenRecs = append(tokenRecs, op.Value)
			}
		}
	}
	for _, rec := range tokenRecs {
		var tok EnrolmentToken
		if err := json.Unmarshal(rec, &tok); err != nil {
			return fmt.Errorf("inventory: decode token: %w", err)
		}
		for _, id := range []string{tok.DeviceID, tok.BoundTo} {
			if id != "" && !slices.Contains(tokens[tokensKey(id)], tok.Hash) {
				tokens[tokensKey(id)] = append(tokens[tokensKey(id)], tok.Hash)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(tokens)) {
		have, err := t.idxList(k)
		if err != nil {
			return err
		}
		n := len(have)
		for _, h := range tokens[k] {
			if !slices.Contains(have, h) {
				have = append(have, h)
			}
		}
		if len(have) != n {
			w.puts = append(w.puts, put{indexTable, k, mustJSON(have)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(owners)) {
		have, err := t.idxList(k)
		if err != nil {
			return err
		}
		next := slices.DeleteFunc(slices.Clone(have), func(id string) bool { owned, ok := owners[k][id]; return ok && !owned })
		for _, id := range slices.Sorted(maps.Keys(owners[k])) {
			if owners[k][id] && !slices.Contains(next, id) {
				next = append(next, id)
			}
		}
		slices.Sort(next)
		if slices.Equal(next, have) {
			continue
		}
		if len(next) == 0 {
			w.puts = append(w.puts, put{table: indexTable, key: k})
			continue
		}
		w.puts = append(w.puts, put{indexTable, k, mustJSON(next)})
	}
	for _, k := range slices.Sorted(maps.Keys(del)) {
		if _, ok := set[k]; !ok {
			w.puts = append(w.puts, put{table: indexTable, key: k})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		w.puts = append(w.puts, put{indexTable, k, []byte(set[k])})
	}
	return nil
}

// expectedIndex is the index the tables call for.
func (s *Store) expectedIndex() (map[string][]byte, error) {
	devs, err := s.Devices()
	if err != nil {
		return nil, err
	}
	users, err := listSorted(s, usersTable, func(u *User) string { return u.Email })
	if err != nil {
		return nil, err
	}
	tokens, err := s.tokens()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	owners := map[string][]string{}
	for _, d := range devs {
		out[nameKey(d.Name)] = []byte(d.ID)
		if d.Serial != "" {
			out[serialKey(d.Serial)] = []byte(d.ID)
		}
		if d.Owner != "" {
			owners[ownerKey(d.Owner)] = append(owners[ownerKey(d.Owner)], d.ID)
		}
	}
	for k, ids := range owners {
		slices.Sort(ids)
		out[k] = mustJSON(ids)
	}
	for _, u := range users {
		u.withID()
		// Before emails were folded, two users could differ only in case:
		// the one stored in lower case wins.
		if k := emailKey(u.Email); out[k] == nil || u.Email == foldEmail(u.Email) {
			out[k] = []byte(u.Email)
		}
		out[loginKey(u.Login)] = []byte(u.Email)
		out[userIDKey(u.ID)] = []byte(u.Email)
	}
	groups, err := s.Groups()
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		out[groupKey(g.Name)] = []byte(g.ID)
	}
	byDev := map[string][]string{}
	for _, t := range tokens { // oldest first
		for _, id := range []string{t.DeviceID, t.BoundTo} {
			if id != "" {
				byDev[tokensKey(id)] = append(byDev[tokensKey(id)], t.Hash)
			}
		}
	}
	for k, hs := range byDev {
		out[k] = mustJSON(hs)
	}
	return out, nil
}

// GroupsNamed returns the groups with these names (a user's Groups), by
// the index: the names no group has are left out.
func (s *Store) GroupsNamed(names []string) ([]*Group, error) {
	var out []*Group
	t := s.reader()
	for _, n := range names {
		id, err := t.idxString(groupKey(n))
		if err != nil {
			return nil, err
		}
		if id == "" {
			continue
		}
		g, err := s.GroupByID(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if g.Name == n {
			out = append(out, g)
		}
	}
	return out, nil
}

// IndexRepair is what Open found wrong with the index, and repaired.
type IndexRepair struct {
	Missing, Stale, Extra int
}

// repairIndex checks the index against the tables, and, if they differ,
// rewrites what differs in one guarded transaction that read every guard
// before the tables (a write meanwhile makes it start again).
func (s *Store) repairIndex() (*IndexRepair, error) {
	diff := func() (map[string][]byte, *IndexRepair, error) {
		want, err := s.expectedIndex()
		if err != nil {
			return nil, nil, err
		}
		entries, err := s.db.List(indexTable)
		if err != nil && !database.IsErrNotFound(err) {
			return nil, nil, fmt.Errorf("inventory: list %s: %w", indexTable, err)
		}
		var r IndexRepair
		fix := map[string][]byte{}
		have := make(map[string]bool, len(entries))
		for _, e := range entries {
			k := string(e.Key)
			have[k] = true
			switch w, ok := want[k]; {
			case !ok:
				r.Extra++
				fix[k] = nil
			case !bytes.Equal(w, e.Value):
				r.Stale++
				fix[k] = w
			}
		}
		for k, v := range want {
			if !have[k] {
				r.Missing++
				fix[k] = v
			}
		}
		return fix, &r, nil
	}
	fix, r, err := diff()
	if err != nil || len(fix) == 0 {
		return r, err
	}
	err = s.write(func(t *txn) error {
		if err := t.seeAll(); err != nil {
			return err
		}
		if fix, r, err = diff(); err != nil || len(fix) == 0 {
			return err
		}
		var w writer
		for _, k := range slices.Sorted(maps.Keys(fix)) {
			w.puts = append(w.puts, put{indexTable, k, fix[k]})
		}
		return s.commitPuts(t, &w)
	})
	return r, err
}
