package principals_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/principals"
)

// FuzzParsePolicy: parsing never panics; a policy that parses has rules
// with an account and principals, and its String parses back to the same.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{designPolicy, "", "#\n", "a b\n", "* login:{account}", "a {b}", "a\r\n", "\xff", "a b\u200b", "a from=x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := principals.ParsePolicy("fuzz.conf", data)
		if err != nil {
			if p != nil {
				t.Fatal("a policy and an error")
			}
			errs := err.(principals.ParseErrors)
			if len(errs) == 0 || !strings.HasPrefix(errs[0].Error(), "fuzz.conf:") {
				t.Fatalf("errors %v", errs)
			}
			return
		}
		for _, r := range p.Rules {
			if r.Account == "" || len(r.Principals) == 0 || r.Line < 1 {
				t.Fatalf("rule %+v", r)
			}
		}
		q, err := principals.ParsePolicy("fuzz.conf", []byte(p.String()))
		if err != nil || q.String() != p.String() || len(q.Rules) != len(p.Rules) {
			t.Fatalf("round trip of %q: %v", p.String(), err)
		}
		p.Warnings()
	})
}

// FuzzDecide: whatever the policy, account and certificate, the helper
// prints either nothing or the certificate's one device-ID principal, which
// is also its key ID; and its one-pass decision (DecideFile) is that of the
// parsed policy.
func FuzzDecide(f *testing.F) {
	dev := devID("laptop-1")
	f.Add([]byte(designPolicy), "alice", dev+"\nlogin:alice", dev, true)
	f.Add([]byte(designPolicy), "admin", dev+"\ngroup:sre\ncollection:sre-laptops", dev, true)
	f.Add([]byte("* "+dev+"\n"), "x", dev, dev, true)
	f.Add([]byte("* login:{account}\n"), "{account}", dev+"\nlogin:{account}", dev, false)
	f.Fuzz(func(t *testing.T, policy []byte, account, certPrincipals, keyID string, userCert bool) {
		c := &principals.Certificate{CertType: principals.HostCert, KeyID: keyID, Principals: strings.Split(certPrincipals, "\n")}
		if userCert {
			c.CertType = principals.UserCert
		}
		// The helper's one-pass decision is the parsed policy's.
		p, err := principals.ParsePolicy("fuzz.conf", policy)
		fast, fastErr := principals.DecideData("fuzz.conf", policy, account, c)
		if fmt.Sprint(err) != fmt.Sprint(fastErr) {
			t.Fatalf("ParsePolicy: %v\nDecideData: %v", err, fastErr)
		}
		if err != nil {
			return
		}
		d := p.Decide(account, c)
		if fast.Allow != d.Allow || fast.DeviceID != d.DeviceID || fast.Reason != d.Reason || (d.Rule != nil) != (fast.Rule != nil) ||
			d.Rule != nil && (d.Rule.Line != fast.Rule.Line || d.Rule.String() != fast.Rule.String()) {
			t.Fatalf("Decide: %+v\nDecideData: %+v", d, fast)
		}
		e, rs := p.Explain(account, c)
		if d.Principal() != e.Principal() {
			t.Fatalf("Decide prints %q, Explain %q", d.Principal(), e.Principal())
		}
		pr := d.Principal()
		if pr == "" {
			if d.Allow {
				t.Fatal("allowed, printing nothing")
			}
			return
		}
		if !slices.Contains(c.Principals, pr) || !deviceid.Valid(pr) || pr != c.KeyID || !userCert || account == "" {
			t.Fatalf("prints %q for %+v", pr, c)
		}
		if last := rs[len(rs)-1]; last.Rule != d.Rule || !last.Matched() {
			t.Fatalf("Explain ends with %+v, Decide chose %+v", last, d.Rule)
		}
	})
}

// FuzzParseCertificate: parsing never panics, and agrees with
// golang.org/x/crypto/ssh on every certificate x/crypto/ssh parses.
func FuzzParseCertificate(f *testing.F) {
	dev := devID("laptop-1")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	f.Add(signedCert(f, key, ssh.UserCert, dev, dev, "login:alice").Marshal())
	f.Add(signedCert(f, skKey(f, ssh.KeyAlgoSKECDSA256), ssh.HostCert, "", "a", "b").Marshal())
	f.Add(key.Marshal())
	f.Fuzz(func(t *testing.T, blob []byte) {
		typ := ""
		if len(blob) > 4 && int(blob[3]) <= len(blob)-4 && blob[0]|blob[1]|blob[2] == 0 {
			typ = string(blob[4 : 4+int(blob[3])])
		}
		c, err := principals.ParseCertificate(typ, base64.StdEncoding.EncodeToString(blob))
		k, sshErr := ssh.ParsePublicKey(blob)
		sc, isCert := k.(*ssh.Certificate)
		if sshErr != nil || !isCert || strings.Contains(typ, "mldsa") {
			return
		}
		if sc.CertType != principals.UserCert && sc.CertType != principals.HostCert {
			if err == nil {
				t.Fatalf("certificate type %d parsed", sc.CertType)
			}
			return
		}
		if err != nil {
			t.Fatalf("x/crypto/ssh parses %s, ParseCertificate: %v", typ, err)
		}
		want := &principals.Certificate{Type: sc.Type(), Serial: sc.Serial, CertType: sc.CertType, KeyID: sc.KeyId,
			Principals: sc.ValidPrincipals, ValidAfter: sc.ValidAfter, ValidBefore: sc.ValidBefore}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("ParseCertificate = %+v\nx/crypto/ssh: %+v", c, want)
		}
	})
}
