package inventory_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// A collection is created by its first SetCollection, keeps what an update
// does not mention, refuses bad host names naming the entry, and every
// change is audited under collection:NAME.
func TestSetCollection(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Collection("web"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("Collection of an unset collection: %v, want ErrNotFound", err)
	}
	if c, err := s.CollectionOrDefault("web"); err != nil || c.AllowFileKeys || len(c.HostNames) != 0 {
		t.Fatalf("default: %+v %v", c, err)
	}
	yes, no := true, false
	c, err := s.SetCollection("root", inventory.CollectionUpdate{Name: "web", AllowFileKeys: &yes})
	if err != nil || !c.AllowFileKeys || c.HostNames == nil || len(c.HostNames) != 0 {
		t.Fatalf("create: %+v %v", c, err)
	}
	names := []string{"*.web.example.com", "10.1.0.0/16", "*.web.example.com"}
	if c, err = s.SetCollection("root", inventory.CollectionUpdate{Name: "web", HostNames: &names}); err != nil {
		t.Fatal(err)
	}
	if !c.AllowFileKeys || !slices.Equal(c.HostNames, []string{"*.web.example.com", "10.1.0.0/16"}) {
		t.Fatalf("host names update lost allowFileKeys or kept a duplicate: %+v", c)
	}
	if c, err = s.SetCollection("root", inventory.CollectionUpdate{Name: "web", AllowFileKeys: &no}); err != nil || c.AllowFileKeys || len(c.HostNames) != 2 {
		t.Fatalf("allowFileKeys update: %+v %v", c, err)
	}
	// Nothing changed: nothing written.
	if _, err = s.SetCollection("root", inventory.CollectionUpdate{Name: "web", AllowFileKeys: &no}); err != nil {
		t.Fatal(err)
	}
	bad := []string{"web1", "bank.*.example.com"}
	_, err = s.SetCollection("root", inventory.CollectionUpdate{Name: "web", HostNames: &bad})
	var ie *inventory.Error
	if !errors.As(err, &ie) || ie.Field != "hostNames" || !strings.Contains(err.Error(), `"bank.*.example.com"`) {
		t.Fatalf("bad host name: %v", err)
	}
	if _, err = s.SetCollection("root", inventory.CollectionUpdate{Name: "bad name"}); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	all, err := s.Collections()
	if err != nil || len(all) != 1 || all[0].Name != "web" {
		t.Fatalf("Collections: %+v %v", all, err)
	}
	audit, err := s.Audit(inventory.CollectionSubject("web"))
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range audit {
		actions = append(actions, e.Action)
	}
	if fmt.Sprint(actions) != "[collection.add collection.update collection.update]" {
		t.Fatalf("audit: %v", actions)
	}
}

// Host names are checked at registration and import, and an import
// without a hostnames column keeps them.
func TestDeviceHostNames(t *testing.T) {
	s, _ := newStore(t)
	pem, id := ek(t, 0)
	_, err := s.AddDevice("root", inventory.NewDevice{EK: pem, Name: "web1", Kind: "host", HostNames: []string{"Web1.example.com"}})
	if err == nil || !strings.Contains(err.Error(), `"Web1.example.com"`) || !strings.Contains(err.Error(), "lower case") {
		t.Fatalf("upper-case host name: %v", err)
	}
	d, err := s.AddDevice("root", inventory.NewDevice{EK: pem, Name: "web1", Kind: "host", HostNames: []string{"web1.example.com", "10.1.2.3"}})
	if err != nil || !slices.Equal(d.HostNames, []string{"web1.example.com", "10.1.2.3"}) {
		t.Fatalf("add: %+v %v", d, err)
	}
	b64, _ := ekB64(t, 0)
	rep, err := s.ImportDevices("root", "a.csv", []byte("ek,name,kind\n"+b64+",web1,host\n"), false)
	if err != nil || rep.Counts[inventory.Unchanged] != 1 {
		t.Fatalf("import without hostnames: %+v %v", rep, err)
	}
	rep, err = s.ImportDevices("root", "b.csv", []byte("ek,name,kind,hostnames\n"+b64+",web1,host,web1.example.com;*.web1.example.com\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || !strings.Contains(strings.Join(rep.Results[0].Changes, ","), "hostNames") {
		t.Fatalf("import with hostnames: %+v %v", rep, err)
	}
	if d, _ = s.Device(id); !slices.Equal(d.HostNames, []string{"web1.example.com", "*.web1.example.com"}) {
		t.Fatalf("after import: %q", d.HostNames)
	}
	_, err = s.ImportDevices("root", "c.json", []byte(fmt.Sprintf(`[{"ek": %q, "name": "web1", "kind": "host", "hostNames": ["10.1.2.3/8"]}]`, b64)), false)
	if err == nil || !strings.Contains(err.Error(), "c.json:1: hostNames:") || !strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Fatalf("bad host name in JSON import: %v", err)
	}
	rep, err = s.ImportDevices("root", "d.json", []byte(fmt.Sprintf(`[{"ek": %q, "name": "web1", "kind": "host", "hostNames": []}]`, b64)), false)
	if d, _ = s.Device(id); err != nil || len(d.HostNames) != 0 {
		t.Fatalf("clearing import: %+v %v; %q", rep, err, d.HostNames)
	}
}
