package caserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/conffile"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krldist"
)

// hangBound only bounds a hang: every wait below is for a condition.
const hangBound = 60 * time.Second

// dialRaw opens an HTTP/1.1 connection to the CA, so that a test controls
// every byte it sends.
func dialRaw(t *testing.T, ca *catest.CA) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(ca.URL, "https://"), ca.TLSConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(hangBound))
	return c
}

// waitClosed reads what the server still sends until it ends the
// connection (closed, reset, or cut mid-record), and returns it; only the
// hang bound passing fails the test.
func waitClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server did not close the connection: %v (read so far: %q)", err, b)
	}
	return b
}

// expectStatus reads a response from c and checks its status.
func expectStatus(t *testing.T, c net.Conn, want int) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d", resp.StatusCode, want)
	}
}

// withLimits sets the body limits; the header and idle timeouts stay at
// their defaults (the header timeout also bounds the TLS handshake, which a
// loaded machine may take a while over).
func withLimits(maxBody int64, bodyTimeout time.Duration) func(*caserver.Config) {
	return func(c *caserver.Config) {
		c.Limits.MaxBody = maxBody
		c.Limits.BodyTimeout = conffile.Duration{Duration: bodyTimeout}
	}
}

// TestBodyTooLarge: a body over the limit is refused with 413 without being
// read: the server answers before the client has sent any of a declared
// 1 GiB body, and stops a chunked body of unbounded length after about
// the limit.
func TestBodyTooLarge(t *testing.T) {
	ca := catest.Start(t, withLimits(4096, 30*time.Second))
	const path = "/acme/" + wire.AttestProvisioner + "/new-account"

	t.Run("declared", func(t *testing.T) {
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/jose+json\r\nContent-Length: %d\r\n\r\n", path, 1<<30)
		expectStatus(t, c, http.StatusRequestEntityTooLarge)
		waitClosed(t, c)
	})

	t.Run("chunked", func(t *testing.T) {
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/jose+json\r\nTransfer-Encoding: chunked\r\n\r\n", path)
		// Send chunks until the server stops the connection, or 256 MiB.
		const most = 256 << 20
		var sent atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", 64<<10, bytes.Repeat([]byte("a"), 64<<10))
			for sent.Load() < most {
				if _, err := c.Write(chunk); err != nil {
					return
				}
				sent.Add(64 << 10)
			}
			c.Write([]byte("0\r\n\r\n"))
		}()
		expectStatus(t, c, http.StatusRequestEntityTooLarge)
		waitClosed(t, c)
		<-done
		// What the client could send is the limit and what the socket
		// buffers hold, far from all of it.
		if n := sent.Load(); n >= most/4 {
			t.Fatalf("the server read %d bytes of a body limited to 4096", n)
		}
	})

	t.Run("admin import", func(t *testing.T) {
		// The admin API keeps its larger limit, for imports.
		var csv bytes.Buffer
		csv.WriteString("email,login,groups\n")
		for i := 0; csv.Len() < 64<<10; i++ {
			fmt.Fprintf(&csv, "user%d@example.com,user%d,sre\n", i, i)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(&ca.AdminCert)}, Timeout: hangBound}
		resp, err := hc.Post(ca.URL+"/devid/v1/import/users?dry_run=true", "text/csv", &csv)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("import of 64 KiB: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("anonymous on the admin API", func(t *testing.T) {
		// Without an admin certificate the admin API's limit does not
		// apply: no anonymous client makes the CA hold 32 MiB.
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST /devid/v1/import/users HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n", 32<<20)
		expectStatus(t, c, http.StatusRequestEntityTooLarge)
		waitClosed(t, c)
	})
}

// TestSlowClient: a client that sends its body or its headers too slowly is
// cut off by the server.
func TestSlowClient(t *testing.T) {
	ca := catest.Start(t, withLimits(4096, 300*time.Millisecond))
	const path = "/acme/" + wire.AttestProvisioner + "/new-account"

	t.Run("body", func(t *testing.T) {
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/jose+json\r\nContent-Length: 100\r\n\r\n{\"a\":", path)
		got := waitClosed(t, c)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) {
			t.Fatalf("answer %q, want 408", got)
		}
	})

	t.Run("headers", func(t *testing.T) {
		// A CA of its own, whose header timeout (which bounds the TLS
		// handshake too) is short but leaves the handshake room.
		ca := catest.Start(t, func(c *caserver.Config) { c.Limits.HeaderTimeout = conffile.Duration{Duration: 3 * time.Second} })
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n", path)
		waitClosed(t, c)
	})

	t.Run("http2 body", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: ca.TLSConfig(nil), ForceAttemptHTTP2: true}
		hc := &http.Client{Transport: tr, Timeout: hangBound}
		pr, pw := io.Pipe()
		defer pw.Close()
		go pw.Write([]byte(`{"a":`))
		req, _ := http.NewRequest(http.MethodPost, ca.URL+path, pr)
		req.ContentLength = 100
		req.Header.Set("Content-Type", "application/jose+json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("%s %d, want HTTP/2 408", resp.Proto, resp.StatusCode)
		}
	})
}

// TestLongPollOutlivesTimeouts: the request timeouts leave a KRL long-poll
// alone. The poll is answered by the change made after the slow clients
// of three request timeouts in a row were cut off, not by a timeout.
func TestLongPollOutlivesTimeouts(t *testing.T) {
	ca := catest.Start(t, withLimits(4096, 300*time.Millisecond))
	cur := ca.Server.PublishedKRL().Version
	type result struct {
		k   *krldist.Signed
		err error
	}
	got := make(chan result, 1)
	go func() {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: hangBound}
		k, err := krldist.Fetch(context.Background(), hc, ca.URL, cur, 5*time.Minute)
		got <- result{k, err}
	}()
	for range 3 {
		c := dialRaw(t, ca)
		fmt.Fprintf(c, "POST /acme/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
		waitClosed(t, c)
	}
	select {
	case r := <-got:
		t.Fatalf("the long-poll ended before the KRL changed: %+v %v", r.k, r.err)
	default:
	}
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	inv := ca.Server.Inventory()
	d, err := inv.AddDevice("test", inventory.NewDevice{EK: base64.StdEncoding.EncodeToString(der), Name: "h", Kind: "host"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.SetStatus("test", d.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.k.Version <= cur {
		t.Fatalf("long-poll: %+v %v, want a KRL newer than %d", r.k, r.err, cur)
	}
}

// TestLimitsConfig: the limits have defaults, and negative ones are
// errors.
func TestLimitsConfig(t *testing.T) {
	ca := catest.Start(t, nil)
	cfg, err := caserver.LoadConfig(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Limits; l.MaxBody != 256<<10 || l.BodyTimeout.Duration != 30*time.Second ||
		l.HeaderTimeout.Duration != 10*time.Second || l.IdleTimeout.Duration != 2*time.Minute {
		t.Errorf("defaults: %+v", l)
	}
	orig, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	// conffile refuses a negative duration itself (with the line).
	for field, bad := range map[string]any{"maxBody": -1, "bodyTimeout": "-1s", "headerTimeout": "-2s", "idleTimeout": "-1m"} {
		want := "limits." + field
		if field != "maxBody" {
			want = fmt.Sprintf("duration %q must be positive", bad)
		}
		var m map[string]any
		json.Unmarshal(orig, &m)
		m["limits"] = map[string]any{field: bad}
		b, _ := json.Marshal(m)
		p := filepath.Join(t.TempDir(), "devid-ca.json")
		os.WriteFile(p, b, 0o644)
		if _, err := caserver.LoadConfig(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("limits.%s %v: err = %v", field, bad, err)
		}
	}
}
