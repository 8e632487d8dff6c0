package inventory

// One-time enrolment tokens: how a pending device (registered without an
// EK) gets its TPM bound to it at its first attestation.
//
//   - IssueToken makes a token for exactly one pending device, with a
//     lifetime (DefaultTokenTTL, at most MaxTokenTTL). Only its hash is
//     stored; the token itself is returned once, to hand to the device.
//     A new token supersedes the device's earlier live ones. Audited as
//     device.token, naming the token by its short hash.
//   - CheckEnrolment says whether a token may bind a TPM: it exists, it is
//     neither used, superseded nor expired, its device is still pending,
//     and what the device says it is (EnrolmentClaim: kind, name) matches.
//     The Attestation CA asks before it sends its challenge.
//   - BindEnrolment, once credential activation has proved the TPM holds
//     the EK, binds the EK to the device (BindEK) and marks the token used
//     in the same transaction. One token binds one TPM: of concurrent
//     uses, one wins, and the others are told the token is used (by whom,
//     when). The same TPM presenting its used token again (a daemon
//     restarted with the token still in its configuration) is simply that
//     device.

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/smallstep/nosql/database"
)

var tokensTable = []byte("devid_enrol_tokens")

// Token lifetimes.
const (
	DefaultTokenTTL = 24 * time.Hour
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// EnrolmentToken is the record of a token: never the token itself, only
// its hash.
type EnrolmentToken struct {
	Hash     string    `json:"hash"`     // hex SHA-256 of the token's text (enroltoken.Hash)
	DeviceID string    `json:"deviceId"` // the pending device's provisional ID
	Name     string    `json:"name"`     // the device's name when the token was issued
	IssuedBy string    `json:"issuedBy"` // the admin
	Issued   time.Time `json:"issued"`
	Expires  time.Time `json:"expires"`
	// Used is when the token bound a TPM, BoundTo that TPM's device ID.
	Used    time.Time `json:"used,omitzero"`
	BoundTo string    `json:"boundTo,omitempty"`
	// Superseded is when a newer token for the device replaced this one.
	Superseded time.Time `json:"superseded,omitzero"`
}

// TokenState is where a token is in its life.
type TokenState string

// Token states.
const (
	TokenLive       TokenState = "live"
	TokenUsed       TokenState = "used"
	TokenExpired    TokenState = "expired"
	TokenSuperseded TokenState = "superseded"
)

// State is the token's state at now.
func (t *EnrolmentToken) State(now time.Time) TokenState {
	switch {
	case !t.Used.IsZero():
		return TokenUsed
	case !t.Superseded.IsZero():
		return TokenSuperseded
	case !now.Before(t.Expires):
		return TokenExpired
	}
	return TokenLive
}

// Short is the token's short hash, how logs and the audit trail name it.
func (t *EnrolmentToken) Short() string {
	if len(t.Hash) < 12 {
		return t.Hash
	}
	return t.Hash[:12]
}

// EnrolmentClaim is what a device presenting a token says it is; an empty
// field claims nothing.
type EnrolmentClaim struct {
	Kind Kind   // host or workstation
	Name string // its name in the inventory
}

// tokenAudit is the "after" of a device.token audit entry.
type tokenAudit struct {
	Token      string    `json:"token"` // short hash
	Expires    time.Time `json:"expires"`
	Superseded []string  `json:"superseded,omitempty"` // short hashes
}

// IssueToken makes a one-time enrolment token for a pending device (by
// name or provisional ID), valid for ttl (0: DefaultTokenTTL), and
// supersedes the device's earlier live tokens. It returns the token, to
// hand to the device, and its record.
func (s *Store) IssueToken(actor, ref string, ttl time.Duration) (enroltoken.Token, *EnrolmentToken, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return enroltoken.Token{}, nil, invalid("ttl", "%s: want between %s and %s (%d days)", ttl, MinTokenTTL, MaxTokenTTL, MaxTokenTTL/(24*time.Hour))
	}
	tok, err := enroltoken.New()
	if err != nil {
		return enroltoken.Token{}, nil, err
	}
	var rec *EnrolmentToken
	err = s.write(func(t *txn) error {
		var err error
		rec, err = s.issueToken(t, actor, ref, tok, ttl)
		return err
	})
	if err != nil {
		return enroltoken.Token{}, nil, err
	}
	return tok, rec, nil
}

func (s *Store) issueToken(t *txn, actor, ref string, tok enroltoken.Token, ttl time.Duration) (*EnrolmentToken, error) {
	d, err := t.deviceRef(ref)
	if err != nil {
		return nil, err
	}
	if !d.Pending() {
		return nil, &Error{Kind: ErrConflict, Field: "device", Msg: notPendingMsg(d)}
	}
	all, err := t.tokensOf(d.ID)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	rec := &EnrolmentToken{Hash: tok.Hash().String(), DeviceID: d.ID, Name: d.Name, IssuedBy: actor, Issued: now, Expires: now.Add(ttl)}
	var w writer
	after := tokenAudit{Token: rec.Short(), Expires: rec.Expires}
	for _, old := range all {
		if old.DeviceID == d.ID && old.State(now) == TokenLive {
			old.Superseded = now
			w.puts = append(w.puts, put{tokensTable, old.Hash, mustJSON(old)})
			after.Superseded = append(after.Superseded, old.Short())
		}
	}
	w.puts = append(w.puts, put{tokensTable, rec.Hash, mustJSON(rec)})
	w.audits = append(w.audits, AuditEntry{Action: "device.token", Subject: d.ID, SubjectName: d.Name, After: mustJSON(after)})
	if err := s.commit(t, actor, now, &w); err != nil {
		return nil, err
	}
	return rec, nil
}

func notPendingMsg(d *Device) string {
	msg := fmt.Sprintf("device %q is %s, not pending: an enrolment token only binds a TPM to a device that has none yet", d.Name, d.Status)
	if d.Status == StatusActive {
		msg += fmt.Sprintf(" (a new TPM for it is `devid device rebind %s`)", d.Name)
	}
	return msg
}

// tokens lists every token record, oldest first.
func (s *Store) tokens() ([]*EnrolmentToken, error) {
	all, err := listSorted(s, tokensTable, func(t *EnrolmentToken) string { return t.Hash })
	slices.SortStableFunc(all, func(a, b *EnrolmentToken) int { return a.Issued.Compare(b.Issued) })
	return all, err
}

// DeviceToken returns the newest token issued for a device, or that bound
// its TPM, and its state now; nil if there is none.
func (s *Store) DeviceToken(d *Device) (*EnrolmentToken, TokenState, error) {
	all, err := s.reader().tokensOf(d.ID)
	if err != nil {
		return nil, "", err
	}
	for _, t := range slices.Backward(all) {
		if t.DeviceID == d.ID || t.BoundTo == d.ID {
			return t, t.State(s.clock()), nil
		}
	}
	return nil, "", nil
}

// Token returns a token's record by its hash.
func (s *Store) Token(h enroltoken.Hash) (*EnrolmentToken, error) {
	var t EnrolmentToken
	if err := s.get(tokensTable, h.String(), &t); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, tokenError(ErrNotFound, "unknown enrolment token (sha256 %s): it was not issued by this CA, or not copied whole; `devid device token NAME` issues one", h.Short())
		}
		return nil, err
	}
	return &t, nil
}

func tokenError(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: "token", Msg: fmt.Sprintf(format, args...)}
}

// CheckEnrolment says whether the token with hash h may bind the TPM whose
// device ID is ekID to its device, for a device that claims to be claim.
// It returns the device the token binds (pending), or, for a token that
// bound this very TPM already, the device it is now. A token it refuses is
// an *Error about the field "token": ErrNotFound for an unknown token,
// ErrConflict for one used, superseded or expired, for a device that is
// not pending or not what the claim says, or for a TPM that is already a
// device.
func (s *Store) CheckEnrolment(h enroltoken.Hash, claim EnrolmentClaim, ekID string) (*Device, *EnrolmentToken, error) {
	d, t, err := s.checkEnrolment(h, claim, ekID)
	if errors.Is(err, ErrConflict) {
		// The records are read one by one, without the store's lock: a
		// use of the token may have committed in between (the device
		// gone from pending, this TPM a device). Check again once the
		// write in progress here, if any, is done: the refusal is then
		// the token's state, or this TPM is the device it bound.
		s.mu.Lock()
		s.mu.Unlock() //nolint:staticcheck // an empty critical section: a wait for the writer
		return s.checkEnrolment(h, claim, ekID)
	}
	return d, t, err
}

func (s *Store) checkEnrolment(h enroltoken.Hash, claim EnrolmentClaim, ekID string) (*Device, *EnrolmentToken, error) {
	t, err := s.Token(h)
	if err != nil {
		return nil, nil, err
	}
	if t.BoundTo == ekID && !t.Used.IsZero() {
		d, err := s.Device(ekID)
		if errors.Is(err, ErrNotFound) {
			// Taken for this TPM, the binding not committed: in progress,
			// or it never will be (devid-ca died, or lost its database,
			// between the two writes). This TPM, which proves its EK
			// again at each attestation, may finish it while the device
			// is still pending.
			p, perr := s.Device(t.DeviceID)
			if perr != nil || !p.Pending() || !t.Superseded.IsZero() {
				return nil, nil, tokenError(ErrConflict, "enrolment token: this TPM is being bound with it at this moment: try again")
			}
			if err := checkClaim(t, p, claim); err != nil {
				return nil, nil, err
			}
			return p, t, nil
		}
		if err != nil {
			return nil, nil, err
		}
		return d, t, nil
	}
	if err := s.checkToken(t, s.clock()); err != nil {
		return nil, nil, err
	}
	d, err := s.Device(t.DeviceID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, tokenError(ErrConflict, "enrolment token for device %q: that device is no longer pending (it was rebound or removed)", t.Name)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := checkClaim(t, d, claim); err != nil {
		return nil, nil, err
	}
	if other, err := s.Device(ekID); err == nil {
		return nil, nil, tokenError(ErrConflict, "this TPM is already device %q (%s, %s): an enrolment token binds only a TPM that no device has", other.Name, other.ID, other.Status)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	return d, t, nil
}

// checkToken refuses a token that is used, superseded or expired at now.
func (s *Store) checkToken(t *EnrolmentToken, now time.Time) *Error {
	switch t.State(now) {
	case TokenUsed:
		name := t.Name
		if d, err := s.Device(t.BoundTo); err == nil {
			name = d.Name
		}
		return tokenError(ErrConflict, "enrolment token already used (by device %q, %s, at %s)", name, t.BoundTo, t.Used.Format(time.RFC3339))
	case TokenSuperseded:
		return tokenError(ErrConflict, "enrolment token for device %q was superseded at %s by a newer one: use the newest token", t.Name, t.Superseded.Format(time.RFC3339))
	case TokenExpired:
		return tokenError(ErrConflict, "enrolment token for device %q expired at %s: issue a new one with `devid device token %s`", t.Name, t.Expires.Format(time.RFC3339), t.Name)
	}
	return nil
}

// checkClaim refuses a token whose device is not pending, or is not what
// the device presenting it says it is.
func checkClaim(t *EnrolmentToken, d *Device, claim EnrolmentClaim) *Error {
	switch {
	case !d.Pending():
		return tokenError(ErrConflict, "enrolment token for %s", notPendingMsg(d))
	case claim.Kind != "" && claim.Kind != d.Kind:
		return tokenError(ErrConflict, "enrolment token for another device: it is for %q, a %s, and this device is a %s", d.Name, d.Kind, claim.Kind)
	case claim.Name != "" && claim.Name != d.Name:
		return tokenError(ErrConflict, "enrolment token for another device: it is for %q, and this device says it is %q", d.Name, claim.Name)
	}
	return nil
}

// BindEnrolment binds the TPM of ek to the device of the token with hash
// h (see CheckEnrolment), and marks the token used, in one transaction
// audited as device.bind by actor. Call it only once the TPM has proved it
// holds the EK (credential activation). A token that bound this TPM
// already returns the device as it is.
func (s *Store) BindEnrolment(actor string, h enroltoken.Hash, claim EnrolmentClaim, ek *deviceid.EK) (*Device, error) {
	d, t, err := s.CheckEnrolment(h, claim, ek.ID())
	if err != nil {
		return nil, err
	}
	if d.ID == ek.ID() {
		return d, nil
	}
	key := []byte(t.Hash)
	var claimed, raw, usedRaw []byte
	extra := func(tx *database.Tx, bound *Device) error {
		// With the store's lock held: the token as it is now.
		var err error
		if raw, err = s.db.Get(tokensTable, key); err != nil {
			return fmt.Errorf("inventory: read token: %w", err)
		}
		var now EnrolmentToken
		if err := json.Unmarshal(raw, &now); err != nil {
			return fmt.Errorf("inventory: decode token: %w", err)
		}
		if !now.Used.IsZero() && now.BoundTo == bound.ID && now.DeviceID == d.ID {
			// Taken for this very TPM by an attestation whose binding
			// never committed (or by this one's earlier attempt): finish
			// it (the device record's guard in BindEK stops a second
			// binding). Written again as it is, so that the index of the
			// TPM's tokens has it.
			tx.Set(tokensTable, key, raw)
			return nil
		}
		if err := s.checkToken(&now, bound.Updated); err != nil {
			return err
		}
		if now.DeviceID != d.ID {
			return tokenError(ErrConflict, "enrolment token for device %q: the device changed meanwhile", now.Name)
		}
		if err := checkClaim(&now, d, claim); err != nil {
			return err
		}
		now.Used, now.BoundTo = bound.Updated, bound.ID
		usedRaw = mustJSON(now)
		// Another devid-ca on the same database (a replica) may be
		// binding with this token too: only one compare-and-swap wins.
		if _, swapped, err := s.db.CmpAndSwap(tokensTable, key, raw, usedRaw); err != nil {
			return fmt.Errorf("inventory: use token: %w", err)
		} else if !swapped {
			if t, err := s.Token(h); err == nil {
				if err := s.checkToken(t, bound.Updated); err != nil {
					return err
				}
			}
			return tokenError(ErrConflict, "enrolment token was used meanwhile")
		}
		claimed = usedRaw
		tx.Set(tokensTable, key, usedRaw)
		return nil
	}
	reason := fmt.Sprintf("enrolment token %s (issued by %s at %s)", t.Short(), t.IssuedBy, t.Issued.Format(time.RFC3339))
	bound, err := s.BindEK(actor, t.DeviceID, ek, "device.bind", reason, extra)
	switch {
	case err != nil && claimed != nil:
		// The binding failed after the token was taken: give it back.
		// Should that fail too, this TPM can still finish the binding
		// with the token (checkEnrolment).
		if _, _, gerr := s.db.CmpAndSwap(tokensTable, key, claimed, raw); gerr != nil {
			err = fmt.Errorf("%w (and giving the enrolment token back failed: %v; this TPM can still use it)", err, gerr)
		}
	case errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict):
		// Another use of the token bound the device between the check
		// and the binding: say so, rather than that the pending record
		// is gone.
		if now, terr := s.Token(h); terr == nil {
			if uerr := s.checkToken(now, s.clock()); uerr != nil {
				return nil, uerr
			}
		}
	}
	return bound, err
}
