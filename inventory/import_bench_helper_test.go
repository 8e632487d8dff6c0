package inventory_test

import (
	"bytes"

	"github.com/devid-ssh/devid/inventory"
)

// importReader imports a device CSV the way this version's API takes it:
// as a stream.
func importReader(s *inventory.Store, data []byte) (*inventory.ImportReport, error) {
	return s.ImportDevicesFrom("bench", "mac.csv", bytes.NewReader(data), inventory.ImportOptions{})
}
