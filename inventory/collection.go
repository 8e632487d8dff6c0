package inventory

import (
	"errors"
	"slices"
)

// CollectionSubject is the audit subject of a collection's changes.
func CollectionSubject(name string) string { return "collection:" + name }

// Collection returns a collection's record. A collection that devices name
// but nobody set has none: ErrNotFound (see DefaultCollection).
func (s *Store) Collection(name string) (*Collection, error) {
	var c Collection
	if err := s.get(collsTable, name, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// CollectionOrDefault returns a collection's record, or the defaults for a
// collection nobody set (no file keys, no host names).
func (s *Store) CollectionOrDefault(name string) (*Collection, error) {
	c, err := s.Collection(name)
	if errors.Is(err, ErrNotFound) {
		return DefaultCollection(name), nil
	}
	return c, err
}

// DefaultCollection is what a collection without a record allows.
func DefaultCollection(name string) *Collection {
	return &Collection{Name: name, HostNames: []string{}}
}

// Collections lists the collections that have a record, sorted by name.
func (s *Store) Collections() ([]*Collection, error) {
	return listSorted(s, collsTable, func(c *Collection) string { return c.Name })
}

// SetCollection creates a collection or changes it. A field the update
// leaves nil keeps its value (a new collection's default). The change is
// audited (collection.add, collection.update) under
// CollectionSubject(name); an update that changes nothing writes nothing
// and returns the record as it is.
func (s *Store) SetCollection(actor string, u CollectionUpdate) (*Collection, error) {
	if err := checkCollectionName(u.Name); err != nil {
		return nil, err
	}
	var names []string
	if u.HostNames != nil {
		var ferr *Error
		if names, ferr = checkHostNames(*u.HostNames); ferr != nil {
			return nil, ferr
		}
		if names == nil {
			names = []string{}
		}
	}
	var out *Collection
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.setCollection(t, actor, u, names)
		return err
	})
	return out, err
}

func (s *Store) setCollection(t *txn, actor string, u CollectionUpdate, names []string) (*Collection, error) {
	var old *Collection
	var c0 Collection
	if err := t.get(collsTable, u.Name, &c0); err == nil {
		old = &c0
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	now := s.clock()
	c := DefaultCollection(u.Name)
	c.Created = now
	action := "collection.add"
	if old != nil {
		c, action = new(Collection), "collection.update"
		*c = *old
		if c.HostNames == nil {
			c.HostNames = []string{}
		}
	}
	if u.AllowFileKeys != nil {
		c.AllowFileKeys = *u.AllowFileKeys
	}
	if u.HostNames != nil {
		c.HostNames = names
	}
	if old != nil && old.AllowFileKeys == c.AllowFileKeys && slices.Equal(old.HostNames, c.HostNames) {
		return old, nil
	}
	c.Updated = now
	var w writer
	w.putCollection(old, c, action)
	return c, s.commit(t, actor, now, &w)
}
