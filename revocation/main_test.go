package revocation_test

import (
	"os"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

// TestMain removes the devid-ca TestActivateKill builds once the tests end.
func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }
