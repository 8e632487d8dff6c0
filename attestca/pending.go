package attestca

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/smallstep/nosql/database"
)

// Pending attestations: bounded per device, found by key, expired by a
// periodic prune, so the cost of one attestation does not grow with the
// number outstanding.
//
// Each pending attestation is a record of devid_attest_pending, keyed by
// the hash of its secret (what /secret looks it up by). Beside them, table
// devid_attest_by_device holds, per device ID, the hashes and ends of its
// pending attestations: at most MaxPendingPerDevice. A new attestation of
// a device that has that many evicts the oldest (its record is deleted, so
// its secret is refused as wrong or expired) rather than being refused:
//
//   - a device never waits: one that restarted or retried mid-attestation,
//     several times, gets a challenge at once, and the newest challenges
//     are the ones it is answering;
//   - a flood of replays of one device's request (anyone who knows the
//     device's EK can send one, though only its TPM can answer) leaves at
//     most MaxPendingPerDevice records, and once it stops the device
//     attests at once; refusing instead (429) would lock the device out
//     for the secret's lifetime after every burst, and all along a
//     sustained one.
//
// The per-device record is changed by compare-and-swap, so devid-ca
// replicas sharing the database keep the bound. The pending record is
// written first, then the device record, then the evicted records are
// deleted: a hash a device record names always has its record, so whichever
// replica evicts it deletes it. (Written the other way round, a replica
// could evict a hash whose record another has yet to write, and that
// record would outlive the bound.) A crash in between leaves a record no
// device record names, which expires like any other.
//
// An expired attestation is refused when its secret comes (Secret checks
// the end), and its records are deleted by Prune, which devid-ca runs
// every minute (PruneEvery): the request path never lists the table.
var byDeviceTable = []byte("devid_attest_by_device")

// MaxPendingPerDevice bounds the pending attestations of one device.
const MaxPendingPerDevice = 4

// PruneEvery is how often devid-ca prunes expired pending attestations.
const PruneEvery = time.Minute

// devicePending is a record of byDeviceTable: a device's pending
// attestations, oldest first.
type devicePending struct {
	Pending []pendingRef `json:"pending"`
}

type pendingRef struct {
	SecretHash []byte    `json:"secretHash"`
	Expires    time.Time `json:"expires"`
}

// maxSwaps bounds the compare-and-swap attempts on a device's record: each
// failure means another attestation of the device was stored in between.
const maxSwaps = 20

// storePending stores rec, a new pending attestation, and drops the
// device's expired ones and, past MaxPendingPerDevice, its oldest.
func (ca *CA) storePending(rec pending, now time.Time) error {
	ca.storing.Lock() // attestations of one instance swap in turn: a flood contends across instances only
	defer ca.storing.Unlock()
	key := []byte(rec.DeviceID)
	b, _ := json.Marshal(rec)
	if err := ca.db.Set(pendingTable, rec.SecretHash, b); err != nil {
		return fmt.Errorf("attestca: store pending attestation: %w", err)
	}
	var drop [][]byte
	stored := false
	for i := range maxSwaps {
		if i > 0 { // another instance swapped in between: wait a little, at random
			time.Sleep(time.Duration(mrand.Int64N(int64(time.Millisecond) << min(i, 5))))
		}
		old, err := ca.db.Get(byDeviceTable, key)
		if database.IsErrNotFound(err) {
			old = nil
		} else if err != nil {
			return fmt.Errorf("attestca: read pending attestations of %s: %w", rec.DeviceID, err)
		}
		var dp devicePending
		if old != nil {
			if err := json.Unmarshal(old, &dp); err != nil {
				return fmt.Errorf("attestca: pending attestations of %s: %w", rec.DeviceID, err)
			}
		}
		drop = drop[:0]
		keep := dp.Pending[:0:0]
		for _, p := range dp.Pending {
			if now.Before(p.Expires) {
				keep = append(keep, p)
			} else {
				drop = append(drop, p.SecretHash)
			}
		}
		for len(keep) >= MaxPendingPerDevice {
			drop, keep = append(drop, keep[0].SecretHash), keep[1:]
		}
		keep = append(keep, pendingRef{SecretHash: rec.SecretHash, Expires: rec.Expires})
		nb, _ := json.Marshal(devicePending{Pending: keep})
		_, swapped, err := ca.db.CmpAndSwap(byDeviceTable, key, old, nb)
		if err != nil {
			return fmt.Errorf("attestca: store pending attestations of %s: %w", rec.DeviceID, err)
		}
		if swapped {
			stored = true
			break
		}
	}
	if !stored {
		if err := ca.db.Del(pendingTable, rec.SecretHash); err != nil {
			ca.cfg.Log.Warn("pending attestation not deleted; the prune will", "device", rec.DeviceID, "err", err)
		}
		return refused("device %s: too many attestations at once (its pending attestations changed under each of %d attempts): try again", rec.DeviceID, maxSwaps)
	}
	if len(drop) > 0 {
		tx := new(database.Tx)
		for _, h := range drop {
			tx.Del(pendingTable, h)
		}
		if err := ca.db.Update(tx); err != nil {
			ca.cfg.Log.Warn("dropped pending attestations not deleted; the prune will", "device", rec.DeviceID, "err", err)
		}
	}
	if len(drop) > 0 {
		ca.cfg.Log.Info("pending attestations dropped: expired, or the oldest past the bound per device", "device", rec.DeviceID, "dropped", len(drop), "max", MaxPendingPerDevice)
	}
	return nil
}

// PruneStats is what a Prune did.
type PruneStats struct {
	Pending, Devices int // records deleted: pending attestations, device records
}

// Prune deletes the pending attestations that expired by now, and the
// device records that name no unexpired one. It lists both tables: it runs
// beside the requests (devid-ca's attest-prune task, every PruneEvery),
// never in them.
func (ca *CA) Prune(now time.Time) (PruneStats, error) {
	var st PruneStats
	entries, err := ca.db.List(pendingTable)
	if err != nil && !database.IsErrNotFound(err) {
		return st, fmt.Errorf("attestca: prune: list pending attestations: %w", err)
	}
	for _, e := range entries {
		var rec pending
		if json.Unmarshal(e.Value, &rec) != nil || !now.Before(rec.Expires) {
			// A record is rewritten only to mark it used, with the same
			// end: deleting one seen expired deletes nothing newer.
			if err := ca.db.Del(pendingTable, e.Key); err != nil {
				return st, fmt.Errorf("attestca: prune: %w", err)
			}
			st.Pending++
		}
	}
	devs, err := ca.db.List(byDeviceTable)
	if err != nil && !database.IsErrNotFound(err) {
		return st, fmt.Errorf("attestca: prune: list devices' pending attestations: %w", err)
	}
	for _, e := range devs {
		var dp devicePending
		if json.Unmarshal(e.Value, &dp) == nil && slices.ContainsFunc(dp.Pending, func(p pendingRef) bool { return now.Before(p.Expires) }) {
			continue
		}
		// Every one expired: delete the record if it is still the one
		// read (an attestation stored since adds to it): swapped to an
		// empty one, then deleted. (An attestation stored between the
		// two is deleted from the record: its pending record stays and
		// expires; the device may have one more pending meanwhile.)
		if _, swapped, err := ca.db.CmpAndSwap(byDeviceTable, e.Key, e.Value, tombstone); err != nil {
			return st, fmt.Errorf("attestca: prune: %w", err)
		} else if !swapped {
			continue
		}
		if err := ca.db.Del(byDeviceTable, e.Key); err != nil {
			return st, fmt.Errorf("attestca: prune: %w", err)
		}
		st.Devices++
	}
	return st, nil
}

// tombstone is a device record being deleted by Prune: no pending
// attestations.
var tombstone = []byte(`{"pending":[]}`)

// PruneLoop runs Prune every `every` until ctx is done (devid-ca's
// attest-prune task). A failed prune is logged and tried again next time.
func (ca *CA) PruneLoop(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		st, err := ca.Prune(ca.cfg.Now())
		if err != nil {
			ca.cfg.Log.Error("pending attestations not pruned", "err", err)
			continue
		}
		if st.Pending+st.Devices > 0 {
			ca.cfg.Log.Info("expired pending attestations pruned", "attestations", st.Pending, "devices", st.Devices)
		}
	}
}
