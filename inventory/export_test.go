package inventory

import (
	"time"

	"github.com/devid-ssh/devid/deviceid"
)

// LiftRead is LiftQuarantine for the device as the caller read it, which
// may be stale: what a devid-ca does when another one sharing the
// database changed the device between its read and its write.
func LiftRead(s *Store, actor string, read *Device, until time.Time) (*Device, error) {
	s.mu.Lock()
	defer s.unlock()
	return s.lift(actor, read, until)
}

// BindRead is BindEK for the device as the caller read it, which may be
// stale: another devid-ca sharing the database may have bound it since.
func BindRead(s *Store, actor string, read *Device, ek *deviceid.EK) (*Device, error) {
	s.mu.Lock()
	defer s.unlock()
	return s.bindRead(actor, read, ek, "device.bind", "", nil)
}
