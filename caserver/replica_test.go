package caserver_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/revocation"
	"github.com/smallstep/nosql"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// TestKRLFromAnotherInstance: a certificate revoked through another
// devid-ca instance on the same database wakes a host's long-poll on this
// one, which serves the same KRL version, bytes and signature (devid-ca runs
// the KRL watch task). The other instance is the inventory and revocation
// store opened on the CA's own database handle: bbolt cannot be opened
// twice, and a second full CA would need its own.
func TestKRLFromAnotherInstance(t *testing.T) {
	ca := catest.Start(t, nil)
	ndb := ca.Server.Authority().GetDatabase().(nosql.DB)
	signers := map[string]ssh.Signer{}
	for _, kind := range []string{"host", "user"} {
		k, err := pemutil.Read(filepath.Join(ca.Dir, "secrets", "ssh_"+kind+"_ca.key"))
		if err != nil {
			t.Fatal(err)
		}
		if signers[kind], err = ssh.NewSignerFromKey(k); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory.Open(ndb, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := revocation.Open(revocation.Config{HostCA: signers["host"].PublicKey(), UserCA: signers["user"].PublicKey(), Signer: signers["user"],
		MaxLifetime: 24 * time.Hour, Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, ndb, inv)
	if err != nil {
		t.Fatal(err)
	}
	v0 := ca.Server.PublishedKRL().Version
	if v := other.Current().Version; v != v0 {
		t.Fatalf("the other instance opened at version %d, the CA serves %d: nothing changed", v, v0)
	}

	type result struct {
		k   *krldist.Signed
		err error
	}
	got := make(chan result, 1)
	go func() {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}}
		k, err := krldist.Fetch(context.Background(), hc, ca.URL, v0, 5*time.Minute)
		got <- result{k, err}
	}()
	c := userCert(t, ca, 4242, "laptop")
	if _, err := other.RevokeCert("admin", c, "leaked"); err != nil {
		t.Fatal(err)
	}
	want := other.Current()
	var r result
	select {
	case r = <-got:
	case <-time.After(2 * time.Minute): // bounds a hang only
		t.Fatal("the CA's long-poll was not woken by a revocation through the other instance")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.k.Version != want.Version || r.k.Version <= v0 || !bytes.Equal(r.k.Body, want.Body) || !bytes.Equal(r.k.Signature, want.Signature) {
		t.Fatalf("the CA serves version %d (%d bytes), the other instance published %d (%d bytes): want the same KRL", r.k.Version, len(r.k.Body), want.Version, len(want.Body))
	}
	if p := ca.Server.PublishedKRL(); p.Version != want.Version {
		t.Fatalf("the CA's current KRL is version %d, want %d", p.Version, want.Version)
	}
}
