package inventory

import "time"

// LiftRead is LiftQuarantine for the device as the caller read it, which
// may be stale: what a devid-ca does when another one sharing the
// database changed the device between its read and its write.
func LiftRead(s *Store, actor string, read *Device, until time.Time) (*Device, error) {
	s.mu.Lock()
	defer s.unlock()
	return s.lift(actor, read, until)
}
