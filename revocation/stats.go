package revocation

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/smallstep/nosql/database"
)

// Stats is what a Store reports about itself, for metrics.
type Stats struct {
	// LastRebuild is when a rebuild last succeeded in this process (by
	// Config.Now), whether or not it published a new version; zero if none
	// has. A rebuild runs on every change and every few minutes besides
	// (devid-ca's krl-rebuild task).
	LastRebuild time.Time
	// Behind: the last rebuild failed, so a change may not be published.
	Behind bool
	// Waiting is the number of long-polls (GET …/krl?after=V) waiting for
	// a version newer than the one they have.
	Waiting int
}

// Stats reports the store's state now.
func (s *Store) Stats() Stats {
	st := Stats{Behind: s.Behind(), Waiting: int(s.waiting.Load())}
	if ns := s.lastRebuild.Load(); ns != 0 {
		st.LastRebuild = time.Unix(0, ns)
	}
	return st
}

// SkipVersions makes the next KRL published from db (a store no devid-ca
// serves from: a backup being restored) take a version at least skip above
// the version db records, so that hosts which installed versions a CA
// published after the backup was taken (and long-poll for a newer one)
// accept it. It reports the versions the store recorded and the one it
// records now. A store without a KRL is left as it is.
func SkipVersions(db database.DB, skip uint64) (from, to uint64, err error) {
	raw, err := db.Get(stateTable, headKey)
	var h head
	switch {
	case database.IsErrNotFound(err):
		raw = nil
	case err != nil:
		return 0, 0, fmt.Errorf("revocation: read stored KRL head: %w", err)
	default:
		if err := json.Unmarshal(raw, &h); err != nil {
			return 0, 0, fmt.Errorf("revocation: stored KRL head: %w", err)
		}
	}
	// The stored KRL may be newer than the head (a store of the earlier
	// layout has no head at all).
	kraw, err := db.Get(stateTable, currentKey)
	switch {
	case database.IsErrNotFound(err):
		if raw == nil {
			return 0, 0, nil
		}
	case err != nil:
		return 0, 0, fmt.Errorf("revocation: read stored KRL: %w", err)
	default:
		var p Published
		if err := json.Unmarshal(kraw, &p); err != nil {
			return 0, 0, fmt.Errorf("revocation: stored KRL: %w", err)
		}
		h.Version = max(h.Version, p.Version)
	}
	from = h.Version
	if h.Version > ^uint64(0)-skip {
		return 0, 0, fmt.Errorf("revocation: KRL version %d: cannot skip %d versions", h.Version, skip)
	}
	h.Version += skip
	h.Generation++
	if _, swapped, err := db.CmpAndSwap(stateTable, headKey, raw, mustJSON(h)); err != nil {
		return 0, 0, fmt.Errorf("revocation: store KRL head: %w", err)
	} else if !swapped {
		return 0, 0, fmt.Errorf("revocation: the stored KRL head changed while skipping versions: is a devid-ca serving from this store?")
	}
	return from, h.Version, nil
}
