package caserver_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
)

func get(t *testing.T, tc *tls.Config, url string) (int, []byte, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func TestInitLayout(t *testing.T) {
	ca := catest.Start(t, nil)
	for _, f := range []string{"secrets/root_ca.key", "secrets/intermediate_ca.key", "secrets/admin_ca.key",
		"secrets/ssh_host_ca.key", "secrets/ssh_user_ca.key", "admin/admin.key"} {
		fi, err := os.Stat(filepath.Join(ca.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(filepath.Join(ca.Dir, "secrets")); fi.Mode().Perm() != 0o700 {
		t.Errorf("secrets/: mode %v", fi.Mode().Perm())
	}
	// A second init must not overwrite the CA.
	if _, err := caserver.Init(caserver.InitOptions{Dir: ca.Dir, DNSNames: []string{"x"}, Now: time.Now()}); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second init: %v", err)
	}
}

func TestLoadConfigStrict(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		`{"version": 1, "adress": ":8443"}`:                   `:1: unknown field "adress"`,
		"{\n\"version\": 2\n}":                                "version 2 is not supported",
		"{\n \"version\": 1,\n \"dnsNames\": \"x\"\n}":        `:3: field "dnsNames"`,
		"{\"version\": 1,\n\"lifetimes\": {\"host\": 86400}}": ":2: ",
		`{"version": 1} {}`:                                   "trailing data",
		`{"version": 1, "dnsNames": ["a"]}`:                   "root is required",
		"{\n\n\"version\": 1,,}":                              ":3: invalid character",
	}
	for in, want := range cases {
		p := filepath.Join(dir, "c.json")
		os.WriteFile(p, []byte(in), 0o644)
		_, err := caserver.LoadConfig(p)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want %q and the file name", in, err, want)
		}
	}
}

// TestStepEndpoints checks that step-ca's endpoints answer as step-ca's do.
func TestStepEndpoints(t *testing.T) {
	ca := catest.Start(t, nil)
	tc := ca.TLSConfig(nil)
	code, body, err := get(t, tc, ca.URL+"/health")
	if err != nil || code != 200 || !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("/health: %d %s %v", code, body, err)
	}
	code, body, _ = get(t, tc, ca.URL+"/roots")
	var roots struct {
		Crts []string `json:"crts"`
	}
	// step-ca answers /roots with 201.
	if code != 201 || json.Unmarshal(body, &roots) != nil || len(roots.Crts) != 1 {
		t.Fatalf("/roots: %d %s", code, body)
	}
	if c, err := pemutil.ParseCertificate([]byte(roots.Crts[0])); err != nil || !c.Equal(ca.Root) {
		t.Fatalf("/roots returned another root: %v", err)
	}
	code, body, _ = get(t, tc, ca.URL+"/root/"+caserver.Fingerprint(ca.Root))
	if code != 200 || !strings.Contains(string(body), "BEGIN CERTIFICATE") {
		t.Fatalf("/root/{sha}: %d %s", code, body)
	}
	for _, p := range []string{"/ssh/roots", "/1.0/ssh/roots"} {
		code, body, _ = get(t, tc, ca.URL+p)
		var sr struct {
			User []string `json:"userKey"`
			Host []string `json:"hostKey"`
		}
		if code != 200 || json.Unmarshal(body, &sr) != nil || len(sr.User) != 1 || len(sr.Host) != 1 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
		userPub, _ := os.ReadFile(filepath.Join(ca.Dir, "certs/ssh_user_ca.pub"))
		k, _, _, _, err := ssh.ParseAuthorizedKey(userPub)
		if err != nil || base64.StdEncoding.EncodeToString(k.Marshal()) != sr.User[0] {
			t.Fatalf("%s: user CA key %q is not certs/ssh_user_ca.pub (%v)", p, sr.User[0], err)
		}
	}
}

// leaf issues a client certificate from the CA's intermediate, as step-ca
// would for a device.
func leaf(t *testing.T, ca *catest.CA, cn string) (tls.Certificate, *ecdsa.PrivateKey, []*x509.Certificate) {
	return deviceLeaf(t, ca, cn, "")
}

// deviceLeaf is leaf with the device ID as its PermanentIdentifier, as a
// device certificate has.
func deviceLeaf(t *testing.T, ca *catest.CA, cn, deviceID string) (tls.Certificate, *ecdsa.PrivateKey, []*x509.Certificate) {
	t.Helper()
	intCert, err := pemutil.ReadCertificate(filepath.Join(ca.Dir, "certs/intermediate_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pemutil.Read(filepath.Join(ca.Dir, "secrets/intermediate_ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		// step-ca caps an SSH certificate at the X5C certificate's expiry:
		// outlive the 24h default.
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if deviceID != "" {
		rv, err := x509util.SubjectAlternativeName{Type: x509util.PermanentIdentifierType, Value: deviceID}.RawValue()
		if err != nil {
			t.Fatal(err)
		}
		san, _ := asn1.Marshal([]asn1.RawValue{rv})
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, intCert, key.Public(), k.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, intCert.Raw}, PrivateKey: key}, key, []*x509.Certificate{c, intCert}
}

// addDevice adds nd to the CA's inventory, as admin "test", with a fresh
// RSA EK.
func addDevice(t *testing.T, ca *catest.CA, nd inventory.NewDevice) *inventory.Device {
	t.Helper()
	ekKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(&ekKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	nd.EK = base64.StdEncoding.EncodeToString(ekDER)
	dev, err := ca.Server.Inventory().AddDevice("test", nd)
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// sshSign asks step-ca's /1.0/ssh/sign for a certificate of certType for
// the device id, with key ID id and principals, through an X5C token
// signed at now by a new device certificate (CN name) and for that
// certificate's own key: the only key the CA signs for a device whose
// collection does not allow file keys. It returns the HTTP status, the
// answer's body, and the key the certificate is asked for.
func sshSign(t *testing.T, ca *catest.CA, name, id, certType string, principals []string, now time.Time) (int, []byte, ssh.PublicKey) {
	t.Helper()
	_, key, chain := deviceLeaf(t, ca, name, id)
	var x5c []string
	for _, c := range chain {
		x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("x5c", x5c))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"iss": wire.DeviceProvisioner, "sub": id, "aud": "https://127.0.0.1/1.0/ssh/sign#x5c/" + wire.DeviceProvisioner,
		"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano()),
		"step": map[string]any{"ssh": map[string]any{"certType": certType, "keyID": id, "principals": principals}},
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jws.CompactSerialize()
	sshPub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"publicKey": sshPub.Marshal(), "ott": tok, "certType": certType, "keyID": id, "principals": principals})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
	resp, err := c.Post(ca.URL+"/1.0/ssh/sign", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("/1.0/ssh/sign: %v", err)
	}
	return resp.StatusCode, body, sshPub
}

func TestAdminAuthentication(t *testing.T) {
	ca := catest.Start(t, nil)
	url := ca.URL + "/devid/v1/devices"
	if code, body, err := get(t, ca.TLSConfig(nil), url); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("no certificate: %d %s %v", code, body, err)
	}
	device, _, _ := leaf(t, ca, "not-an-admin")
	if code, body, err := get(t, ca.TLSConfig(&device), url); err != nil || code != http.StatusForbidden {
		t.Fatalf("device certificate: %d %s %v", code, body, err)
	}
	// A certificate from a CA devid-ca does not know fails the handshake.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admin"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	foreign := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	// Go's client withholds a certificate the server's CA list does not
	// name; force it out, as other clients would send it.
	tc := ca.TLSConfig(nil)
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	if code, _, err := get(t, tc, url); err == nil {
		t.Fatalf("foreign certificate: got HTTP %d, want a TLS failure", code)
	}
	code, body, err := get(t, ca.TLSConfig(&ca.AdminCert), url)
	if err != nil || code != 200 || !strings.Contains(string(body), `"devices": []`) {
		t.Fatalf("admin: %d %s %v", code, body, err)
	}
	// Admin certificates are for the admin API only.
	if code, _, err := get(t, ca.TLSConfig(&ca.AdminCert), ca.URL+"/roots"); err != nil || code != http.StatusForbidden {
		t.Fatalf("admin certificate on /roots: %d %v", code, err)
	}
}

// TestSSHSign signs an SSH host certificate through step-ca's /ssh/sign with
// an X5C token, and checks it with x/crypto/ssh and ssh-keygen -L.
func TestSSHSign(t *testing.T) {
	ca := catest.Start(t, nil)
	dev := addDevice(t, ca, inventory.NewDevice{Name: "host-1", Kind: "host", HostNames: []string{"host-1.example.com", "10.0.0.1"}})
	keyID := dev.ID
	code, body, sshPub := sshSign(t, ca, "host-1", keyID, "host", []string{"host-1.example.com", "10.0.0.1"}, time.Now())
	if code != 201 {
		t.Fatalf("/ssh/sign: %d %s", code, body)
	}
	var sr struct {
		Crt string `json:"crt"`
	}
	json.Unmarshal(body, &sr)
	raw, err := base64.StdEncoding.DecodeString(sr.Crt)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.ParsePublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	cert := pk.(*ssh.Certificate)
	hostCAPub, _ := os.ReadFile(filepath.Join(ca.Dir, "certs/ssh_host_ca.pub"))
	hostCA, _, _, _, _ := ssh.ParseAuthorizedKey(hostCAPub)
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return bytes.Equal(auth.Marshal(), hostCA.Marshal())
	}}
	if err := checker.CheckCert("host-1.example.com", cert); err != nil {
		t.Fatalf("certificate does not check against the host CA: %v", err)
	}
	if cert.CertType != ssh.HostCert || cert.KeyId != keyID || !bytes.Equal(cert.Key.Marshal(), sshPub.Marshal()) {
		t.Fatalf("certificate: type %d key ID %q", cert.CertType, cert.KeyId)
	}
	if life := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; life < 23*time.Hour || life > 25*time.Hour {
		t.Fatalf("lifetime %v, want the 24h default", life)
	}

	out := sshdtest.KeygenL(t, cert)
	for _, want := range []string{"ecdsa-sha2-nistp256-cert-v01@openssh.com host certificate", `Key ID: "` + keyID + `"`,
		"host-1.example.com", "10.0.0.1", "Signing CA: ECDSA " + ssh.FingerprintSHA256(hostCA)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, out)
		}
	}
}
