package inventory

import (
	"fmt"
	"strings"
	"time"

	"github.com/devid-ssh/devid/deviceid"
)

// Rebind gives a device a new TPM (a motherboard swap): an explicit
// operator action, with a reason, audited. The device's record keeps its
// name and everything else, under a new ID: pending (its next
// attestation, with a token from IssueToken, binds the new TPM), or, with
// ek, bound to that EK and active at once. The old TPM's record stays,
// retired, under the old device ID and a new name (RetiredName): every
// certificate the old TPM held stays revoked by its key ID, and that TPM
// cannot come back. Only an active device can be rebound (a quarantined one
// is activated first, explicitly);
// the old record loses its serial number, asset tag and MDM source, which
// belong to the machine and go with the new record.
//
// It returns the retired record and the device.
func (s *Store) Rebind(actor, ref, reason string, ek *deviceid.EK) (retired, dev *Device, err error) {
	if strings.TrimSpace(reason) == "" {
		return nil, nil, invalid("reason", "required: say why the device has a new TPM (it is in the audit trail)")
	}
	if err := CheckReason(reason); err != nil {
		return nil, nil, err
	}
	err = s.write(func(t *txn) error {
		var err error
		retired, dev, err = s.rebind(t, actor, ref, reason, ek)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return retired, dev, nil
}

func (s *Store) rebind(t *txn, actor, ref, reason string, ek *deviceid.EK) (retired, dev *Device, err error) {
	snap := t.lazy()
	old, err := t.deviceRef(ref)
	if err != nil {
		return nil, nil, err
	}
	switch old.Status {
	case StatusPending:
		return nil, nil, &Error{Kind: ErrConflict, Field: "device", Msg: fmt.Sprintf("device %q is pending: no TPM is bound to it yet, so there is nothing to rebind (`devid device token %s` issues a token that binds one)", old.Name, old.Name)}
	case StatusRetired:
		return nil, nil, &Error{Kind: ErrConflict, Field: "device", Msg: fmt.Sprintf("device %q is retired, and retirement is final", old.Name)}
	case StatusQuarantined:
		// A new TPM would make it active (or pending, then active by a
		// token) without anyone lifting the quarantine.
		return nil, nil, &Error{Kind: ErrConflict, Field: "device", Msg: fmt.Sprintf("device %q is quarantined: a rebind would bring it back without anyone lifting the quarantine; `devid device activate %s` first, if it should come back", old.Name, old.Name)}
	}
	if ek != nil {
		if other, err := snap.device(ek.ID()); err != nil {
			return nil, nil, err
		} else if other != nil {
			return nil, nil, &Error{Kind: ErrConflict, Field: "ek", Msg: fmt.Sprintf("this TPM is already device %q (%s, %s)", other.Name, other.ID, other.Status)}
		}
	}
	now := s.clock()
	r := *old
	var rerr error
	r.Name = RetiredName(old.Name, now, func(n string) bool {
		d, err := snap.named(n)
		if err != nil {
			rerr = err
			return false
		}
		return d != nil
	})
	if rerr != nil {
		return nil, nil, rerr
	}
	r.Status, r.StatusChanged, r.Updated = StatusRetired, now, now
	r.StatusReason = "TPM replaced (devid device rebind " + old.Name + "): " + reason
	r.Serial, r.AssetTag, r.Source, r.SourceID = "", "", "", ""

	d := *old
	d.Status, d.StatusReason, d.StatusChanged, d.Updated = StatusPending, reason, now, now
	d.ID, d.EKPublic, d.EKCert = newPendingID(), nil, nil
	if ek != nil {
		d.Status, d.ID, d.EKPublic = StatusActive, ek.ID(), ek.PublicDER
		if ek.Certificate != nil {
			d.EKCert = ek.Certificate.Raw
		}
	}
	var w writer
	w.putDevice(old, &r, "device.retire", r.StatusReason)
	w.putDevice(old, &d, "device.rebind", reason)
	if err := s.commit(t, actor, now, &w); err != nil {
		return nil, nil, err
	}
	return &r, &d, nil
}

// RetiredName is the name a device's old record takes when the device is
// rebound at now: NAME.replaced-YYYYMMDDTHHMMSSZ, with -2, -3… if taken
// (taken says whether a name is), shortened to stay a valid name.
func RetiredName(name string, now time.Time, taken func(string) bool) string {
	suffix := ".replaced-" + now.UTC().Format("20060102T150405Z")
	for i := 1; ; i++ {
		sfx := suffix
		if i > 1 {
			sfx += fmt.Sprintf("-%d", i)
		}
		base := name
		if max := 253 - len(sfx); len(base) > max {
			base = base[:max]
		}
		if n := base + sfx; !taken(n) {
			return n
		}
	}
}
