package inventory

import (
	"time"

	"github.com/devid-ssh/devid/deviceid"
)

// LiftRead is LiftQuarantine for the device as the caller read it, which
// may be stale: what a devid-ca does when another one sharing the
// database changed the device between its read and its write. The first
// attempt uses read; a later one (the guard failed) reads afresh.
func LiftRead(s *Store, actor string, read *Device, until time.Time) (*Device, error) {
	var out *Device
	id := read.ID
	err := s.write(func(t *txn) error {
		old := read
		if read != nil {
			read = nil
			if err := t.see(devicesTable, old.ID); err != nil {
				return err
			}
		} else {
			var err error
			if old, err = t.deviceRef(id); err != nil {
				return err
			}
		}
		var err error
		out, err = s.lift(t, actor, old, until)
		return err
	})
	return out, err
}

// BindRead is BindEK for the device as the caller read it, which may be
// stale: another devid-ca sharing the database may have bound it since.
func BindRead(s *Store, actor string, read *Device, ek *deviceid.EK) (*Device, error) {
	return s.bindEK(actor, read.Name, read, ek, "device.bind", "", nil)
}

// Repaired is what Open repaired in the index.
func Repaired(s *Store) IndexRepair { return *s.repaired }

// SetSleep replaces the pause between the attempts of a write.
func SetSleep(s *Store, f func(time.Duration)) { s.sleep = f }
