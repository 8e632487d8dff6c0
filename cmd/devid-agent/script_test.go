package main

import (
	"testing"

	"github.com/devid-ssh/devid/cmd/devid-agent/agentcli"
	"github.com/devid-ssh/devid/internal/clitest"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"devid-agent": clitest.Main(agentcli.Main)})
}

// TestScripts runs testdata/script/*.txtar.
func TestScripts(t *testing.T) { testscript.Run(t, clitest.Params("testdata/script")) }
