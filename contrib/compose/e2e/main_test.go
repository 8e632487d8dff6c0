package e2e

import (
	"os"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }
