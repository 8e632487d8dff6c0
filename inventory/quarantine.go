package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smallstep/nosql/database"
)

// A temporary quarantine (Quarantine with a duration) has its end in the
// device's record (Device.QuarantineUntil) and in a record of its own in
// endsTable, keyed by the device ID and the end, written and deleted in the
// same transaction as the device's record: every change that takes a
// device out of quarantine, or gives its quarantine another end (or none),
// deletes it. devid-ca lists these records (QuarantineEnds) and lifts each
// quarantine that is due (LiftQuarantine). The record is also what makes a
// lift happen once when several devid-ca instances share the database: the
// lift's transaction locks it, reads it and deletes it, and fails, changing
// nothing, when another lift (or an operator's change) deleted it first.
var endsTable = []byte("devid_quarantine_ends")

// Bounds of a temporary quarantine's duration.
const (
	MinQuarantineFor = time.Minute
	MaxQuarantineFor = 366 * 24 * time.Hour
)

// QuarantineEnd is the end of a device's temporary quarantine.
type QuarantineEnd struct {
	DeviceID string    `json:"deviceId"`
	Until    time.Time `json:"until"`
}

func endKey(id string, until time.Time) []byte {
	return []byte(id + "\x00" + strconv.FormatInt(until.UnixNano(), 10))
}

// keepEnds adds to w what keeps endsTable in step with a device's change:
// a device that is not quarantined has no end, an end that went is
// deleted, a new one is written.
func (w *writer) keepEnds(before, after *Device) {
	if after.Status != StatusQuarantined {
		after.QuarantineUntil = nil
	}
	var old, next *time.Time
	if before != nil {
		old = before.QuarantineUntil
	}
	next = after.QuarantineUntil
	same := old != nil && next != nil && old.Equal(*next) && before.ID == after.ID
	if same || old == nil && next == nil {
		return
	}
	if w.tx == nil {
		w.tx = new(database.Tx)
	}
	if old != nil {
		w.tx.Del(endsTable, endKey(before.ID, *old))
	}
	if next != nil {
		w.tx.Set(endsTable, endKey(after.ID, *next), mustJSON(QuarantineEnd{DeviceID: after.ID, Until: *next}))
	}
}

// Quarantine quarantines a device (by ID or name), for the given duration
// (between MinQuarantineFor and MaxQuarantineFor), or with no end when it
// is zero. A device that is active is quarantined; one that is quarantined
// already gets the new end (or none) in place of its old one, keeping the
// time it left active. Quarantining again a device quarantined with no end,
// with no end, is a conflict, as SetStatus has it; so is a device that is
// pending or retired. The reason must pass CheckReason.
//
// When the end comes, devid-ca brings the device back to active
// (LiftQuarantine), revoking what it held before, as an operator's
// activation does. An explicit status change before then (activate,
// retire) cancels the end.
func (s *Store) Quarantine(actor, ref, reason string, dur time.Duration) (*Device, error) {
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	if dur != 0 && (dur < MinQuarantineFor || dur > MaxQuarantineFor) {
		return nil, invalid("for", "%v: a temporary quarantine lasts from %v to %v", dur, MinQuarantineFor, MaxQuarantineFor)
	}
	var out *Device
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.quarantine(t, actor, ref, reason, dur)
		return err
	})
	return out, err
}

func (s *Store) quarantine(t *txn, actor, ref, reason string, dur time.Duration) (*Device, error) {
	old, err := t.deviceRef(ref)
	if err != nil {
		return nil, err
	}
	again := old.Status == StatusQuarantined && (dur != 0 || old.QuarantineUntil != nil)
	if !again && !allowedTransition(old.Status, StatusQuarantined) {
		return nil, &Error{Kind: ErrConflict, Field: "status", Msg: transitionMsg(old, StatusQuarantined)}
	}
	now := s.clock()
	d := *old
	d.Status, d.StatusReason, d.Updated = StatusQuarantined, reason, now
	if !again {
		d.StatusChanged = now
	}
	d.QuarantineUntil = nil
	if dur != 0 {
		until := now.Add(dur)
		d.QuarantineUntil = &until
	}
	var w writer
	w.putDevice(old, &d, "device.quarantine", reason)
	return &d, s.commit(t, actor, now, &w)
}

// QuarantineEnds lists the ends of the temporary quarantines, soonest
// first.
func (s *Store) QuarantineEnds() ([]QuarantineEnd, error) {
	entries, err := s.db.List(endsTable)
	if err != nil && !database.IsErrNotFound(err) {
		return nil, fmt.Errorf("inventory: list %s: %w", endsTable, err)
	}
	out := make([]QuarantineEnd, 0, len(entries))
	for _, e := range entries {
		var q QuarantineEnd
		if err := json.Unmarshal(e.Value, &q); err != nil {
			return nil, fmt.Errorf("inventory: decode %s/%q: %w", endsTable, e.Key, err)
		}
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b QuarantineEnd) int {
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		return strings.Compare(a.DeviceID, b.DeviceID)
	})
	return out, nil
}

// LiftQuarantine ends a device's temporary quarantine that ends at until,
// once the store's clock has reached it: the device becomes active, audited
// as device.activate by actor with a reason saying the temporary quarantine
// ended, and the certificates it held before are revoked in the same
// transaction, as on any activation (BeforeDeviceCommit). It returns the
// device as it is now, or nil when there was nothing to do: the end is
// not due, or the device is no longer quarantined until then (activated,
// retired, quarantined again, or lifted already, by this devid-ca or
// another one sharing the database).
func (s *Store) LiftQuarantine(actor, id string, until time.Time) (*Device, error) {
	var out *Device
	err := s.write(func(t *txn) error {
		old, err := t.deviceRef(id)
		if errors.Is(err, ErrNotFound) {
			return s.dropEnd(id, until)
		}
		if err != nil {
			return err
		}
		out, err = s.lift(t, actor, old, until)
		return err
	})
	return out, err
}

// lift is LiftQuarantine for the device as read (old).
func (s *Store) lift(t *txn, actor string, old *Device, until time.Time) (*Device, error) {
	if old.Status != StatusQuarantined || old.QuarantineUntil == nil || !old.QuarantineUntil.Equal(until) {
		// A leftover of a change that did not delete it (none does
		// today): drop it, or it would be looked at for ever.
		return nil, s.dropEnd(old.ID, until)
	}
	now := s.clock()
	if now.Before(until) {
		return nil, nil
	}
	reason := fmt.Sprintf("temporary quarantine ended at %s", until.UTC().Format(time.RFC3339))
	if r := old.StatusReason; r != "" {
		const room = MaxReasonLen - 100
		if len(r) > room {
			r = strings.ToValidUTF8(r[:room], "") + "…"
		}
		reason += " (quarantined: " + r + ")"
	}
	d := *old
	d.Status, d.StatusReason, d.StatusChanged, d.Updated, d.QuarantineUntil = StatusActive, reason, now, now, nil
	// The guard: lock the end's record (a compare-and-swap that writes
	// what is there), then read it, which fails the whole transaction if
	// another lift or change deleted it meanwhile, then delete it.
	key := endKey(old.ID, until)
	rec := mustJSON(QuarantineEnd{DeviceID: old.ID, Until: until})
	w := writer{tx: new(database.Tx)}
	w.tx.Operations = append(w.tx.Operations, &database.TxEntry{Bucket: endsTable, Key: key, CmpValue: rec, Value: rec, Cmd: database.CmpAndSwap})
	w.tx.Get(endsTable, key)
	w.tx.Del(endsTable, key)
	w.putDevice(old, &d, "device.activate", reason)
	if err := s.commit(t, actor, now, &w); err != nil {
		return nil, err // errRetry: read again, and see it lifted or changed
	}
	return &d, nil
}

// dropEnd deletes an end that no device has.
func (s *Store) dropEnd(id string, until time.Time) error {
	if err := s.db.Del(endsTable, endKey(id, until)); err != nil && !database.IsErrNotFound(err) {
		return fmt.Errorf("inventory: delete %s/%s: %w", endsTable, id, err)
	}
	return nil
}
