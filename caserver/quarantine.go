package caserver

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

// quarantinePoll is how often the quarantine-lift task reads the ends of
// the temporary quarantines: a quarantine another devid-ca sharing the
// database set, or one whose end came on a clock that jumped, is lifted
// within that long.
const quarantinePoll = 5 * time.Second

// quarantineLifter is what the quarantine-lift task needs of the
// inventory (an *inventory.Store).
type quarantineLifter interface {
	QuarantineEnds() ([]inventory.QuarantineEnd, error)
	LiftQuarantine(actor, id string, until time.Time) (*inventory.Device, error)
}

// liftActor is who lifts a temporary quarantine, in the audit trail.
const liftActor = "devid-ca"

// liftQuarantines activates every device whose temporary quarantine has
// ended by now(), until ctx is done: it reads the ends from the database
// (so a restart, or another devid-ca's quarantine, loses none), lifts the
// due ones (inv.LiftQuarantine: activation, audited as devid-ca, and the
// revocation of the certificates the device held before, in one
// transaction), and waits until the next end or poll, whichever is
// sooner. A lift another devid-ca did first is nothing to do. A lift that
// fails is logged and tried again at the next poll; an inventory that
// cannot be read fails the task (restarted after a backoff).
func liftQuarantines(ctx context.Context, inv quarantineLifter, now func() time.Time, log *slog.Logger, poll time.Duration) error {
	for {
		ends, err := inv.QuarantineEnds()
		if err != nil {
			return fmt.Errorf("devid-ca: temporary quarantines: %w", err)
		}
		t := now()
		wait := poll
		for _, e := range ends {
			if left := e.Until.Sub(t); left > 0 {
				wait = min(wait, left)
				continue
			}
			d, err := inv.LiftQuarantine(liftActor, e.DeviceID, e.Until)
			switch {
			case err != nil:
				log.Error("temporary quarantine not lifted; trying again", "device", e.DeviceID, "until", e.Until, "err", err)
			case d != nil:
				log.Warn("temporary quarantine ended: device active again, its earlier certificates revoked", "device", d.ID, "name", d.Name, "until", e.Until)
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}
