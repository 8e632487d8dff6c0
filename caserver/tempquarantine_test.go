package caserver_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/smallstep/nosql"
)

// TestTemporaryQuarantineLifts, through a real devid-ca on a fake clock: a
// device quarantined for 2h through the admin API is in the KRL; the CA
// stops, the clock passes the end, and once the CA is back (the end is in
// the database) its quarantine-lift task activates the device, audited as
// devid-ca, and publishes a new KRL in which the certificate the device
// held before stays revoked (now by serial) while a certificate issued
// after is good.
func TestTemporaryQuarantineLifts(t *testing.T) {
	clk := fakeclock.New(time.Now())
	ca := catest.StartClock(t, nil, clk.Now)
	dev := addDevice(t, ca, inventory.NewDevice{Name: "laptop-1", Kind: "workstation"})
	// A certificate the device holds, recorded as step-ca records those it
	// issues.
	held := userCertFor(t, ca, 4711, dev.ID, 24*time.Hour)
	ndb := ca.Server.Authority().GetDatabase().(nosql.DB)
	if err := ndb.Set([]byte("ssh_certs"), []byte(strconv.FormatUint(held.Serial, 10)), held.Marshal()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // the quarantine comes after the certificate's issue

	code, body := adminDo(t, ca, "POST", "/devid/v1/devices/laptop-1/status", `{"status": "quarantined", "reason": "odd logins", "for": "2h"}`)
	until := clk.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339Nano)
	if code != http.StatusOK || !strings.Contains(body, `"quarantineUntil": "`+until+`"`) {
		t.Fatalf("quarantine for 2h: HTTP %d, want 200 with quarantineUntil %s:\n%s", code, until, body)
	}
	before := ca.Server.PublishedKRL()
	if k, err := krl.Parse(before.Body); err != nil || !k.IsRevoked(held) {
		t.Fatalf("quarantined: the KRL does not revoke the device's certificate (%v)", err)
	}
	for _, bad := range []string{`{"status": "quarantined", "for": "30s"}`, `{"status": "quarantined", "for": "2 hours"}`, `{"status": "retired", "for": "2h"}`} {
		if code, body := adminDo(t, ca, "POST", "/devid/v1/devices/laptop-1/status", bad); code != http.StatusBadRequest || !strings.Contains(body, `"field": "for"`) {
			t.Errorf("%s: HTTP %d, want 400 about for:\n%s", bad, code, body)
		}
	}

	ca.Stop()
	clk.Advance(2*time.Hour + time.Second)
	if err := ca.Restart(); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // bounds a hang only
	defer cancel()
	var after *krldist.Signed
	for after == nil || after.Version <= before.Version {
		var err error
		if after, err = krldist.Fetch(ctx, hc, ca.URL, before.Version, time.Minute); err != nil {
			t.Fatalf("waiting for the KRL of the lift: %v", err)
		}
	}
	d, err := ca.Server.Inventory().Device("laptop-1")
	if err != nil || d.Status != inventory.StatusActive || d.QuarantineUntil != nil {
		t.Fatalf("after the end: %+v %v, want active", d, err)
	}
	k, err := krl.Parse(after.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !k.IsRevoked(held) {
		t.Error("the certificate held before the quarantine is good again after the lift")
	}
	if fresh := userCertFor(t, ca, 4712, dev.ID, 24*time.Hour); k.IsRevoked(fresh) {
		t.Error("a certificate issued after the lift is revoked: the device's key ID is still in the KRL")
	}
	entries, err := ca.Server.Inventory().Audit(dev.ID)
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1]
	if last.Action != "device.activate" || last.Actor != "devid-ca" || !strings.HasPrefix(last.Reason, "temporary quarantine ended at ") || !strings.HasSuffix(last.Reason, "(quarantined: odd logins)") {
		t.Errorf("last audit entry %+v, want devid-ca's device.activate", last)
	}
	if q := entries[len(entries)-2]; q.Action != "device.quarantine" || q.Actor == "devid-ca" {
		t.Errorf("audit entry before the lift %+v, want the admin's quarantine", q)
	}
}
