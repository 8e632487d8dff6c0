package hostd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/hostd"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "hostd.json")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	c, err := hostd.LoadConfig(write(`{"version": 1, "caUrl": "https://ca.example.com:8443", "root": "/etc/devid/root_ca.crt"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TPM != "/dev/tpmrm0" || c.HostKey != "" || !c.TPMHostKeyMode() || c.TPMHostKey != "/var/lib/devid-hostd/ssh_host_key.tpm" ||
		c.SSHDHostKey != "/etc/ssh/devid/ssh_host_tpm_key" || c.HostKeyAgent != "/run/devid-hostd/hostkey.sock" ||
		c.HostCertificate != "/etc/ssh/devid/ssh_host_tpm_key-cert.pub" ||
		c.TrustedUserCAKeys != "/etc/ssh/devid/user_ca.pub" || c.MetricsAddress != "127.0.0.1:9750" || c.Reload.SystemdUnit != "ssh.service" ||
		c.RenewFraction < 0.66 || c.RenewFraction > 0.67 || c.Principals != nil || c.SSHD.Binary != "/usr/sbin/sshd" {
		t.Fatalf("defaults: %+v", c)
	}
	for in, want := range map[string]string{
		"{\n\"version\": 1,\n\"caUrl\": \"https://x\",\n\"root\": \"/r\",\n\"tpmPath\": \"/dev/tpm0\"\n}": `hostd.json:5: unknown field "tpmPath"`,
		`{"version": 2}`:                                                                                        "version 2 is not supported",
		`{"version": 1, "root": "/r"}`:                                                                          "caUrl is required",
		`{"version": 1, "caUrl": "http://x", "root": "/r"}`:                                                     "want https://",
		`{"version": 1, "caUrl": "https://x"}`:                                                                  "root is required",
		`{"version": 1, "caUrl": "https://x", "root": "/r", "hostKey": "rel"}`:                                  `hostKey "rel": want an absolute path`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "tpmHostKey": "rel"}`:                               `tpmHostKey "rel": want an absolute path`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "hostKey": "/k", "hostKeyAgent": "/s"}`:             "exclude each other",
		`{"version": 1, "caUrl": "https://x", "root": "/r", "renewFraction": 1}`:                                "renewFraction 1",
		`{"version": 1, "caUrl": "https://x", "root": "/r", "principals": ["a b"]}`:                             `principals: "a b"`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "principals": ["*.web.example.com"]}`:               `principals: "*.web.example.com" is not a host name or address: a pattern`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "principals": ["Web1"]}`:                            `principals: "Web1" is not a host name or address: host name entry "Web1": upper case`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "reload": {"systemdUnit": "ssh", "pidFile": "/p"}}`: "not both",
		`{"version": 1, "caUrl": "https://x", "root": "/r", "hostKeyType": "dsa"}`:                              `hostKeyType "dsa"`,
		`{"version": 1, "caUrl": "https://x", "root": "/r", "userCaInterval": 300}`:                             "duration must be a string",
		`{"version": 1, "caUrl": "https://x", "root": "/r", "metricsAddress": "9750"}`:                          "metricsAddress",
	} {
		_, err := hostd.LoadConfig(write(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "hostd.json") {
			t.Errorf("%s: err = %v, want %q and the file name", in, err, want)
		}
	}
}

func TestHostPublicKeyCreates(t *testing.T) {
	dir := t.TempDir()
	c := &hostd.Config{HostKey: filepath.Join(dir, "ssh_host_ed25519_key"), HostKeyType: "ed25519"}
	pub, err := hostd.HostPublicKey(c)
	if err != nil {
		t.Fatal(err)
	}
	if pub.Type() != "ssh-ed25519" {
		t.Fatalf("type %s", pub.Type())
	}
	fi, err := os.Stat(c.HostKey)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	again, err := hostd.HostPublicKey(c)
	if err != nil || string(again.Marshal()) != string(pub.Marshal()) {
		t.Fatalf("second call made another key: %v", err)
	}
	os.Remove(c.HostKey + ".pub")
	derived, err := hostd.HostPublicKey(c)
	if err != nil || string(derived.Marshal()) != string(pub.Marshal()) {
		t.Fatalf("public key not derived from the private one: %v", err)
	}
}
