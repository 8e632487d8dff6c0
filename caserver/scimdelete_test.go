package caserver

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/scim"
	"github.com/smallstep/nosql"
)

// interleaved is the inventory with something else done (between) once,
// right after the first lookup of a user by ID or right before the first
// deletion by ID: what another request does while a SCIM DELETE runs.
type interleaved struct {
	*inventory.Store
	between func()
	once    sync.Once
}

func (i *interleaved) UserByID(id string) (*inventory.User, error) {
	u, err := i.Store.UserByID(id)
	i.once.Do(i.between)
	return u, err
}

func (i *interleaved) DeleteUserByID(actor, id, reason string) (*inventory.UserDeletion, error) {
	i.once.Do(i.between)
	return i.Store.DeleteUserByID(actor, id, reason)
}

// TestSCIMDeleteRenamed: while the IdP's DELETE of alice's ID runs, a PATCH
// renames her asmith and a POST creates a new alice@. The DELETE deletes
// asmith, the user the ID names; the new alice@ stays.
func TestSCIMDeleteRenamed(t *testing.T) {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := inventory.Open(db, fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)).Now)
	if err != nil {
		t.Fatal(err)
	}
	inv := &interleaved{Store: store}
	b := scimBackend{inv: inv}
	const actor = "scim:okta"
	alice, err := b.CreateUser(actor, &scim.User{Provisioned: true, UserName: "alice@example.com", Email: "alice@example.com", Login: "alice", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	var hire *scim.User
	inv.between = func() {
		if _, err := b.UpdateUser(actor, alice.ID, func(u *scim.User) error {
			u.UserName, u.Email, u.Login = "asmith@example.com", "asmith@example.com", "asmith"
			return nil
		}); err != nil {
			t.Errorf("the PATCH: %v", err)
		}
		if hire, err = b.CreateUser(actor, &scim.User{Provisioned: true, UserName: "alice@example.com", Email: "alice@example.com", Login: "alice", Active: true}); err != nil {
			t.Errorf("the POST: %v", err)
		}
	}
	if err := b.DeleteUser(actor, alice.ID); err != nil {
		t.Fatal(err)
	}
	if hire == nil {
		t.Fatal("nothing ran beside the DELETE")
	}
	if u, err := store.User("alice@example.com"); err != nil || u.ID != hire.ID {
		t.Fatalf("the new alice@ after the DELETE of the old one's ID: %+v %v; want %s", u, err, hire.ID)
	}
	if _, err := store.UserByID(alice.ID); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("the deleted ID: %v; want it gone", err)
	}
	if err := b.DeleteUser(actor, alice.ID); !errors.Is(err, scim.ErrNotFound) {
		t.Fatalf("DELETE again: %v, want not found", err)
	}
}
