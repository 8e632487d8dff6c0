package depcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostBinaries run on every host (or an operator's laptop): they must not
// depend on github.com/smallstep/certificates, whose dependency tree would
// ride along.
var hostBinaries = []string{"devid-hostd", "devid-principals", "devid"}

func TestHostBinariesAvoidStepCA(t *testing.T) {
	checked := 0
	for _, name := range hostBinaries {
		dir := filepath.Join("..", "..", "cmd", name)
		if _, err := os.Stat(dir); err != nil {
			continue // not written yet
		}
		checked++
		out, err := exec.Command("go", "list", "-deps", "./"+filepath.ToSlash(dir)).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", dir, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/smallstep/certificates") {
				t.Errorf("cmd/%s depends on %s", name, dep)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no host binary found under cmd/: the test would check nothing")
	}
	// The check itself works: devid-ca does depend on step-ca.
	out, err := exec.Command("go", "list", "-deps", "../../cmd/devid-ca").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "github.com/smallstep/certificates/authority") {
		t.Fatalf("go list -deps cmd/devid-ca does not show step-ca: %v\n%.500s", err, out)
	}
}
