package revocation

import (
	"slices"
	"strings"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

// KRLBodies builds, at now, the KRL from the revoked key IDs (as a rebuild
// does) and the KRL the earlier devid-ca built from the whole inventory
// (inventoryRevocations), both with version 1, for a test to compare.
func (s *Store) KRLBodies(now time.Time) (fromTable, fromInventory []byte, err error) {
	old, err := s.inventoryRevocations(now)
	if err != nil {
		return nil, nil, err
	}
	r, err := s.revocations(now)
	if err != nil {
		return nil, nil, err
	}
	if fromTable, err = encode(r, 1, now, s.cfg.HostCA, s.cfg.UserCA); err != nil {
		return nil, nil, err
	}
	fromInventory, err = encode(old, 1, now, s.cfg.HostCA, s.cfg.UserCA)
	return fromTable, fromInventory, err
}

// inventoryRevocations is the earlier devid-ca's revocations, verbatim but
// for the serials (read as now): key IDs from every device and user.
func (s *Store) inventoryRevocations(now time.Time) (*Revocations, error) {
	r := &Revocations{}
	devs, err := s.inv.Devices()
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if d.Status == inventory.StatusActive || inventory.IsPendingID(d.ID) {
			continue // a pending device, even retired, never had a certificate
		}
		if now.Sub(d.StatusChanged) > s.cfg.MaxLifetime+time.Minute {
			r.Expired++
			continue
		}
		r.KeyIDs = append(r.KeyIDs, d.ID)
	}
	owned, pruned, err := s.disabledDevices(devs, now)
	if err != nil {
		return nil, err
	}
	r.Expired += pruned
	for _, id := range owned {
		if !slices.Contains(r.KeyIDs, id) {
			r.UserKeyIDs = append(r.UserKeyIDs, id)
		}
	}
	serials, err := s.revocations(now)
	if err != nil {
		return nil, err
	}
	r.Host, r.User = serials.Host, serials.User
	slices.Sort(r.KeyIDs)
	return r, nil
}

// disabledDevices is the earlier devid-ca's, verbatim.
func (s *Store) disabledDevices(devs []*inventory.Device, now time.Time) ([]string, int, error) {
	users, err := s.inv.Users()
	if err != nil {
		return nil, 0, err
	}
	disabled := map[string]bool{} // folded email
	pruned := 0
	for _, u := range users {
		if !u.Disabled {
			continue
		}
		if now.Sub(u.StatusChanged) > s.cfg.MaxLifetime+time.Minute {
			pruned++
			continue
		}
		disabled[strings.ToLower(u.Email)] = true
	}
	var ids []string
	for _, d := range devs {
		if d.Owner != "" && disabled[strings.ToLower(d.Owner)] {
			ids = append(ids, d.ID)
		}
	}
	slices.Sort(ids)
	return ids, pruned, nil
}
