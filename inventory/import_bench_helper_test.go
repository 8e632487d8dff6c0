package inventory_test

import "github.com/devid-ssh/devid/inventory"

// importReader imports a device CSV the way this version's API takes it.
func importReader(s *inventory.Store, data []byte) (*inventory.ImportReport, error) {
	return s.ImportDevices("bench", "mac.csv", data, false)
}
