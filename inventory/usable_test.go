package inventory_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

type lookup map[string]*inventory.Device

func (l lookup) Device(ref string) (*inventory.Device, error) {
	if ref == "broken" {
		return nil, errors.New("disk on fire")
	}
	if d, ok := l[ref]; ok {
		return d, nil
	}
	return nil, &inventory.Error{Kind: inventory.ErrNotFound, Msg: "no device " + ref}
}

// User: alice is enabled, dora disabled, broken@ fails, anyone else is
// not a user.
func (l lookup) User(email string) (*inventory.User, error) {
	switch email {
	case "alice@example.com":
		return &inventory.User{Email: email, Login: "alice"}, nil
	case "dora@example.com":
		return &inventory.User{Email: email, Login: "dora", Disabled: true}, nil
	case "broken@example.com":
		return nil, errors.New("disk on fire")
	}
	return nil, &inventory.Error{Kind: inventory.ErrNotFound, Msg: "no user " + email}
}

func TestCheckUsable(t *testing.T) {
	devs := lookup{}
	for _, st := range []inventory.Status{inventory.StatusActive, inventory.StatusQuarantined, inventory.StatusRetired} {
		id := "urn:ek:sha256:" + string(st)
		devs[id] = &inventory.Device{ID: id, Name: "dev-" + string(st), Status: st}
	}
	for _, o := range []string{"alice", "dora", "gone", "broken"} {
		id := "urn:ek:sha256:owned-by-" + o
		devs[id] = &inventory.Device{ID: id, Name: "laptop-" + o, Kind: inventory.KindWorkstation, Status: inventory.StatusActive, Owner: o + "@example.com"}
	}
	// A host's owner looks after it: their leaving does not take it down.
	devs["urn:ek:sha256:host-of-dora"] = &inventory.Device{ID: "urn:ek:sha256:host-of-dora", Name: "web-dora", Kind: inventory.KindHost, Status: inventory.StatusActive, Owner: "dora@example.com"}
	for _, c := range []struct {
		id, err string // err "": usable
	}{
		{"urn:ek:sha256:active", ""},
		{"urn:ek:sha256:owned-by-alice", ""},
		{"urn:ek:sha256:host-of-dora", ""},
		{"urn:ek:sha256:owned-by-dora", "device laptop-dora (urn:ek:sha256:owned-by-dora) is active, but its owner dora@example.com is disabled"},
		{"urn:ek:sha256:owned-by-gone", "device laptop-gone (urn:ek:sha256:owned-by-gone) is active, but its owner gone@example.com is not a user"},
		{"urn:ek:sha256:quarantined", "device dev-quarantined (urn:ek:sha256:quarantined) is quarantined"},
		{"urn:ek:sha256:retired", "device dev-retired (urn:ek:sha256:retired) is retired"},
		{"urn:ek:sha256:none", "device urn:ek:sha256:none is not registered (on the machine, `devid tpm info` prints its EK and the `devid device add` line that registers it; a device registered as pending, by its serial number, binds its TPM with its enrolment token from `devid device token NAME`)"},
	} {
		d, err := inventory.CheckUsable(devs, c.id)
		switch {
		case c.err == "" && (err != nil || d == nil || d.ID != c.id):
			t.Errorf("%s: %v %v, want the device", c.id, d, err)
		case c.err != "" && (d != nil || err == nil || err.Error() != c.err || !errors.Is(err, inventory.ErrNotUsable)):
			t.Errorf("%s: %v %v, want %q (ErrNotUsable)", c.id, d, err, c.err)
		}
	}
	// The inventory failing is not a refusal.
	for _, id := range []string{"broken", "urn:ek:sha256:owned-by-broken"} {
		if _, err := inventory.CheckUsable(devs, id); err == nil || errors.Is(err, inventory.ErrNotUsable) || fmt.Sprint(err) != "disk on fire" {
			t.Errorf("broken inventory (%s): %v", id, err)
		}
	}
}
