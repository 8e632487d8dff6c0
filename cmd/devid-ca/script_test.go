package main

import (
	"os"
	"testing"

	"github.com/devid-ssh/devid/cmd/devid-ca/cacli"
	"github.com/devid-ssh/devid/internal/clitest"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/rogpeppe/go-internal/testscript"
)

// mainEnv, set to 1, makes the test binary run devid-ca itself with its
// arguments: tests that need a devid-ca process (notify_test.go).
const mainEnv = "DEVID_CA_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(cacli.Main(os.Args[1:], command.OSEnv()))
	}
	testscript.Main(m, map[string]func(){"devid-ca": clitest.Main(cacli.Main)})
}

// TestScripts runs testdata/script/*.txtar.
func TestScripts(t *testing.T) { testscript.Run(t, clitest.Params("testdata/script")) }
