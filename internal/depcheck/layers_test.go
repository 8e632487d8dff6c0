package depcheck

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// layers orders the module's packages, lowest first. A package may import
// packages of its own layer or of lower ones, never of a higher one. An
// entry ending in "/..." covers a directory and everything below it that
// no other entry names.
var layers = []struct {
	name string
	pkgs []string
}{
	// Ground: small helpers and formats, importing nothing of the module
	// but each other. adminapi and attestca/wire are the wire formats both
	// sides of a connection share.
	{"ground", []string{
		"internal/atomicfile", "internal/buildinfo", "internal/buildinfo/buildmetrics", "internal/conffile", "internal/fakeclock", "internal/command", "internal/sshdrun", "internal/task", "internal/procstat", "internal/statusfile", "internal/sdnotify", "internal/storebackup",
		"deviceid/idform", "attestca/wire", "adminapi", "enroltoken", "krl", "renew", "sshagent",
	}},
	// Leaves: device identity, the TPM, the principals policy, the KRL's
	// HTTP exchange.
	{"leaves", []string{"deviceid", "tpm", "principals", "krldist", "hostnames", "issuance/tpmkey"}},
	// Domain: the CA's inventory; the device side of enrolment.
	{"domain", []string{"inventory", "enroll"}},
	// Services: what the CA does with the inventory (revocation, the
	// Attestation CA, the issuance policy, the SCIM service); the host
	// daemon.
	{"services", []string{"revocation", "attestca", "issuance", "scim", "hostd", "agentd", "caserver/pgchanges"}},
	// Composition: devid-ca, step-ca and the services on one listener.
	{"composition", []string{"caserver", "caserver/adminhttp"}},
	// Harnesses: what tests (and the demo) start.
	{"harnesses", []string{"tpm/swtpmtest", "caserver/catest", "internal/sshdtest", "internal/clitest", "internal/gobuild", "sshagent/sshagenttest", "agentd/agenttest", "scim/scimtest", "internal/sdnotify/sdnotifytest", "internal/debimage", "internal/dockertest", "internal/pgtest", "fleetsim"}},
	// Top: the commands, packaging checks, this package, the end-to-end
	// tests (caserver/stepcli: step's CLI against devid-ca; contrib/compose/e2e:
	// the compose set).
	{"top", []string{"cmd/...", "packaging/...", "contrib/...", "internal/depcheck", "hostd/e2e", "agentd/e2e", "caserver/stepcli"}},
}

// layerOf returns the index of pkg's layer (a path inside the module), or
// -1. An exact entry wins over a "/..." one.
func layerOf(pkg string) int {
	tree := -1
	for i, l := range layers {
		for _, p := range l.pkgs {
			if p == pkg {
				return i
			}
			if base, ok := strings.CutSuffix(p, "/..."); ok && (pkg == base || strings.HasPrefix(pkg, base+"/")) {
				tree = i
			}
		}
	}
	return tree
}

// TestLayers: no import arrow runs back up (non-test imports, as go list
// shows them for linux/amd64).
func TestLayers(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...")
	cmd.Env = goEnv
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr(err))
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := inModule(fields[0])
		if !ok {
			t.Fatalf("go list: %s is not in %s", fields[0], module)
		}
		seen[pkg] = true
		from := layerOf(pkg)
		if from < 0 {
			t.Errorf("%s is in no layer: place it in layers (layers_test.go)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ok := inModule(imp)
			if !ok {
				continue
			}
			if to := layerOf(dep); to > from {
				t.Errorf("%s (%s) imports %s (%s, a higher layer)", pkg, layers[from].name, dep, layers[to].name)
			}
		}
	}
	// Every entry names a package, or a tree with one: a stale table
	// would hide nothing, but would mislead.
	for _, l := range layers {
		for _, p := range l.pkgs {
			base, tree := strings.CutSuffix(p, "/...")
			if !slices.ContainsFunc(keys(seen), func(s string) bool { return s == base || tree && strings.HasPrefix(s, base+"/") }) {
				t.Errorf("layer %s lists %s, which is no package of the module: remove it", l.name, p)
			}
		}
	}
	if len(seen) < 20 {
		t.Fatalf("go list showed %d packages of the module: the test would check little", len(seen))
	}
}

// inModule returns an import path relative to the module's root.
func inModule(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	return strings.CutPrefix(path, module+"/")
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLayerOf: the table lookup itself.
func TestLayerOf(t *testing.T) {
	for pkg, want := range map[string]string{
		"adminapi": "ground", "caserver": "composition", "caserver/catest": "harnesses",
		"cmd/devid/devidcli": "top", "packaging/packagingtest": "top", "no/such": "",
	} {
		got := ""
		if i := layerOf(pkg); i >= 0 {
			got = layers[i].name
		}
		if got != want {
			t.Errorf("layerOf(%s) = %q, want %q", pkg, got, fmt.Sprint(want))
		}
	}
}
