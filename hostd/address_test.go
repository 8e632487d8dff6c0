package hostd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/hostd"
)

// TestParseTPMAddress: the one parser of the tpm field, used by both check
// and run, refuses what run could never open.
func TestParseTPMAddress(t *testing.T) {
	for in, want := range map[string]hostd.TPMAddress{
		"/dev/tpmrm0":           {Network: "device", Address: "/dev/tpmrm0"},
		"unix:/run/swtpm/sock":  {Network: "unix", Address: "/run/swtpm/sock"},
		"tcp:127.0.0.1:2321":    {Network: "tcp", Address: "127.0.0.1:2321"},
		"tcp:[::1]:2321":        {Network: "tcp", Address: "[::1]:2321"},
		"tcp:tpm.example.com:1": {Network: "tcp", Address: "tpm.example.com:1"},
		"tcp:localhost:65535":   {Network: "tcp", Address: "localhost:65535"},
	} {
		got, err := hostd.ParseTPMAddress(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                    "empty",
		"tpmrm0":              "absolute",
		"unix:":               "absolute",
		"unix:sock":           "absolute",
		"tcp:":                "HOST:PORT",
		"tcp:localhost":       "HOST:PORT",
		"tcp::2321":           "host",
		"tcp:localhost:0":     "port 0",
		"tcp:localhost:65536": "port 65536",
		"tcp:localhost:99999": "port 99999",
		"tcp:localhost:-1":    `port "-1" is not a number`,
		"tcp:localhost:swtpm": "port",
		"tcp:a b:1":           "host",
		"TCP:localhost:2321":  "absolute",
		"udp:localhost:2321":  "absolute",
	} {
		_, err := hostd.ParseTPMAddress(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one saying %q", in, err, want)
		}
	}
}

// TestConfigAddresses: check (LoadConfig) refuses a TPM address run cannot
// open and ports outside 1-65535, naming the field.
func TestConfigAddresses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hostd.json")
	const base = `{"version": 1, "caUrl": "https://ca.example.com:8443", "root": "/r"`
	for in, want := range map[string]string{
		`, "tpm": "tcp:localhost"}`:                `tpm "tcp:localhost"`,
		`, "tpm": "tcp:localhost:70000"}`:          `tpm "tcp:localhost:70000"`,
		`, "tpm": "unix:relative/sock"}`:           `tpm "unix:relative/sock"`,
		`, "metricsAddress": "127.0.0.1:99999"}`:   `metricsAddress "127.0.0.1:99999": port 99999`,
		`, "metricsAddress": "127.0.0.1:0"}`:       `metricsAddress "127.0.0.1:0": port 0`,
		`, "metricsAddress": "127.0.0.1:http"}`:    `metricsAddress "127.0.0.1:http"`,
		`, "caUrl": "https://ca.example.com:0"}`:   `caUrl "https://ca.example.com:0": port 0`,
		`, "caUrl": "https://ca.example.com:1e5"}`: `caUrl "https://ca.example.com:1e5"`,
		`, "caUrl": "https://:8443"}`:              `caUrl "https://:8443"`,
		`, "metricsAddress": "127.0.0.1:+9750"}`:   `metricsAddress "127.0.0.1:+9750": port "+9750"`,
		`, "tpm": "tcp:localhost:+2321"}`:          `tpm "tcp:localhost:+2321"`,
		`, "revokedKeys": "offline.krl"}`:          `revokedKeys`,
	} {
		os.WriteFile(file, []byte(base+in), 0o644)
		_, err := hostd.LoadConfig(file)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "hostd.json") {
			t.Errorf("%s: err = %v, want %q and the file name", in, err, want)
		}
	}
	os.WriteFile(file, []byte(base+`, "tpm": "tcp:[::1]:2321", "metricsAddress": "[::1]:9750"}`), 0o644)
	if _, err := hostd.LoadConfig(file); err != nil {
		t.Errorf("good addresses refused: %v", err)
	}
}

// FuzzParseTPMAddress: any input gives an address or an error, never a
// panic, and an accepted address names its parts as given.
func FuzzParseTPMAddress(f *testing.F) {
	for _, s := range []string{"/dev/tpmrm0", "unix:/run/s", "tcp:127.0.0.1:2321", "tcp:[::1]:1", "tcp:h:65536", "tcp::1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := hostd.ParseTPMAddress(s)
		if err != nil {
			return
		}
		if a.Network != "device" && a.Network+":"+a.Address != s || a.Network == "device" && a.Address != s {
			t.Fatalf("%q parsed as %+v", s, a)
		}
	})
}
