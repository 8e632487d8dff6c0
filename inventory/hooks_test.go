package inventory_test

import (
	"errors"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql/database"
)

// TestDeviceChangeDeliveredAfterUnlock: the OnDeviceChange function runs
// after the commit (it reads the new state) and after the write lock is
// released (other writes go on while it runs, and it may write itself),
// before the write method returns; a refused change is not delivered.
func TestDeviceChangeDeliveredAfterUnlock(t *testing.T) {
	s, _ := newStore(t)
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a", Kind: "host"}); err != nil {
		t.Fatal(err)
	}

	entered := make(chan []inventory.DeviceChange, 10)
	release := make(chan struct{})
	var seen inventory.Status
	s.OnDeviceChange(func(changes []inventory.DeviceChange) {
		if d, err := s.Device(changes[0].After.ID); err == nil {
			seen = d.Status
		}
		entered <- changes
		<-release
	})
	done := make(chan error, 1)
	go func() {
		_, err := s.SetStatus("root", idA, inventory.StatusQuarantined, "lost")
		done <- err
	}()
	hang := time.After(time.Minute) // bounds a hang only
	var changes []inventory.DeviceChange
	select {
	case changes = <-entered:
	case <-hang:
		t.Fatal("OnDeviceChange not called")
	}
	if len(changes) != 1 || changes[0].Before.Status != inventory.StatusActive || changes[0].After.Status != inventory.StatusQuarantined {
		t.Fatalf("changes %+v, want a → quarantined", changes)
	}
	if seen != inventory.StatusQuarantined {
		t.Fatalf("OnDeviceChange read status %q, want the committed quarantined", seen)
	}
	select {
	case err := <-done:
		t.Fatalf("SetStatus returned (%v) before its OnDeviceChange did", err)
	default:
	}
	// The hook is still running: other writes are not held up, and the
	// hook itself could write.
	wrote := make(chan error, 1)
	go func() {
		_, err := s.AddUser("root", inventory.NewUser{Email: "bob@example.com", Login: "bob"})
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-hang:
		t.Fatal("a write waited for a slow OnDeviceChange")
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-hang:
		t.Fatal("SetStatus did not return")
	}

	// A change BeforeDeviceCommit refuses is neither committed nor
	// delivered.
	errNo := errors.New("refused")
	s.BeforeDeviceCommit(func([]inventory.DeviceChange, *database.Tx) error { return errNo })
	if _, err := s.SetStatus("root", idA, inventory.StatusActive, "found"); !errors.Is(err, errNo) {
		t.Fatalf("refused change: %v", err)
	}
	select {
	case c := <-entered:
		t.Fatalf("a refused change was delivered: %+v", c)
	default:
	}
	if d, err := s.Device(idA); err != nil || d.Status != inventory.StatusQuarantined {
		t.Fatalf("after a refused change: %+v, %v; want still quarantined", d, err)
	}
}
