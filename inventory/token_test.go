package inventory_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/inventory"
)

func ekKey(t testing.TB, i int) *deviceid.EK {
	t.Helper()
	p, _ := ek(t, i)
	k, err := deviceid.ParseEKText(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func addPending(t testing.TB, s *inventory.Store, name, kind, serial string) *inventory.Device {
	t.Helper()
	d, err := s.AddDevice("op", inventory.NewDevice{Name: name, Kind: kind, Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantTokenErr(t *testing.T, what string, err error, kind error, msg string) {
	t.Helper()
	var ie *inventory.Error
	if !errors.As(err, &ie) || !errors.Is(err, kind) || ie.Field != "token" || !strings.Contains(err.Error(), msg) {
		t.Fatalf("%s: %v; want %v about the token, saying %q", what, err, kind, msg)
	}
}

// TestTokenLifecycle: a token is for one pending device, stored and audited
// only by its hash; a new one supersedes the old; it binds exactly one TPM,
// once, and names who used it afterwards; the same TPM presenting it again
// is that device.
func TestTokenLifecycle(t *testing.T) {
	s, clk := newStore(t)
	laptop := addPending(t, s, "laptop-7", "workstation", "C02AAA")
	issuedAt := clk.Now()

	// Bounds of the lifetime; only a pending device gets one.
	for _, ttl := range []time.Duration{30 * time.Second, 31 * 24 * time.Hour, -time.Hour} {
		if _, _, err := s.IssueToken("op", "laptop-7", ttl); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "ttl:") {
			t.Fatalf("ttl %s: %v", ttl, err)
		}
	}
	if _, _, err := s.IssueToken("op", "nope", 0); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("token for an unknown device: %v", err)
	}
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("op", inventory.NewDevice{EK: pemA, Name: "web-1", Kind: "host"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.IssueToken("op", "web-1", 0); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "devid device rebind web-1") {
		t.Fatalf("token for an active device: %v", err)
	}

	first, rec1, err := s.IssueToken("op", "laptop-7", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rec1.Expires != issuedAt.Add(inventory.DefaultTokenTTL) || rec1.DeviceID != laptop.ID || rec1.Hash != first.Hash().String() {
		t.Fatalf("token record %+v", rec1)
	}
	clk.Advance(time.Minute)
	second, _, err := s.IssueToken("op", "laptop-7", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The first is superseded.
	_, _, err = s.CheckEnrolment(first.Hash(), inventory.EnrolmentClaim{}, idA)
	wantTokenErr(t, "superseded token", err, inventory.ErrConflict, `enrolment token for device "laptop-7" was superseded at 2026-11-01T12:01:00Z`)
	if st, state, err := s.DeviceToken(laptop); err != nil || st.Hash != second.Hash().String() || state != inventory.TokenLive {
		t.Fatalf("DeviceToken = %+v, %v; want the second, live", st, err)
	}

	// Unknown and malformed-but-well-formed tokens.
	stranger, _ := enroltoken.New()
	_, _, err = s.CheckEnrolment(stranger.Hash(), inventory.EnrolmentClaim{}, idA)
	wantTokenErr(t, "unknown token", err, inventory.ErrNotFound, "unknown enrolment token (sha256 "+stranger.Hash().Short()+")")

	// A TPM that is a device already is not bound again.
	_, _, err = s.CheckEnrolment(second.Hash(), inventory.EnrolmentClaim{}, idA)
	wantTokenErr(t, "a registered TPM", err, inventory.ErrConflict, `this TPM is already device "web-1"`)

	// What the device says it is must be what the token is for.
	_, _, err = s.CheckEnrolment(second.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindHost}, "urn:ek:sha256:x")
	wantTokenErr(t, "kind claim", err, inventory.ErrConflict, `enrolment token for another device: it is for "laptop-7", a workstation, and this device is a host`)
	_, _, err = s.CheckEnrolment(second.Hash(), inventory.EnrolmentClaim{Name: "laptop-8"}, "urn:ek:sha256:x")
	wantTokenErr(t, "name claim", err, inventory.ErrConflict, `it is for "laptop-7", and this device says it is "laptop-8"`)

	key, idB := ekKey(t, 1), ""
	idB = key.ID()
	d, tok, err := s.CheckEnrolment(second.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindWorkstation, Name: "laptop-7"}, idB)
	if err != nil || d.ID != laptop.ID || tok.Hash != second.Hash().String() {
		t.Fatalf("CheckEnrolment = %+v, %+v, %v", d, tok, err)
	}
	clk.Advance(time.Minute)
	bound, err := s.BindEnrolment("devid-ca", second.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindWorkstation}, key)
	if err != nil {
		t.Fatal(err)
	}
	if bound.ID != idB || bound.Status != inventory.StatusActive || bound.Name != "laptop-7" || bound.Serial != "C02AAA" {
		t.Fatalf("bound %+v", bound)
	}
	usedAt := clk.Now()
	if st, state, err := s.DeviceToken(bound); err != nil || state != inventory.TokenUsed || st.BoundTo != idB || !st.Used.Equal(usedAt) {
		t.Fatalf("DeviceToken after the binding: %+v, %v", st, err)
	}
	// The same TPM again: it is that device, nothing changes.
	again, err := s.BindEnrolment("devid-ca", second.Hash(), inventory.EnrolmentClaim{}, key)
	if err != nil || again.ID != idB || !again.Updated.Equal(bound.Updated) {
		t.Fatalf("the binding TPM presenting its token again: %+v, %v", again, err)
	}
	// Another TPM: refused, naming who used it and when.
	_, err = s.BindEnrolment("devid-ca", second.Hash(), inventory.EnrolmentClaim{}, ekKey(t, 2))
	wantTokenErr(t, "a used token", err, inventory.ErrConflict, fmt.Sprintf(`enrolment token already used (by device "laptop-7", %s, at %s)`, idB, usedAt.Format(time.RFC3339)))
	// Still used after it would have expired.
	clk.Advance(3 * time.Hour)
	_, _, err = s.CheckEnrolment(second.Hash(), inventory.EnrolmentClaim{}, "urn:ek:sha256:x")
	wantTokenErr(t, "a used, expired token", err, inventory.ErrConflict, "already used")

	// The audit trail: device.token twice, device.bind; the token itself
	// nowhere, its short hash in the entries.
	audit, err := s.Audit("")
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range audit {
		b := fmt.Sprintf("%+v %s %s", e, e.Before, e.After)
		for _, tk := range []enroltoken.Token{first, second} {
			if strings.Contains(b, tk.Text()) || strings.Contains(b, tk.Text()[len(enroltoken.Prefix):]) {
				t.Fatalf("the audit trail holds a token: %s", b)
			}
		}
		if e.Action == "device.token" || e.Action == "device.bind" {
			actions = append(actions, e.Action)
		}
	}
	if strings.Join(actions, " ") != "device.token device.token device.bind" {
		t.Fatalf("audit actions %q", actions)
	}
	tokAudit, err := s.Audit(laptop.ID)
	if err != nil || len(tokAudit) != 3 || !strings.Contains(string(tokAudit[2].After), `"superseded":["`+first.Hash().Short()+`"]`) ||
		!strings.Contains(string(tokAudit[2].After), second.Hash().Short()) || tokAudit[2].Actor != "op" {
		t.Fatalf("audit of the pending device: %+v, %v", tokAudit, err)
	}
	// The bound device's history: the pending one's, then the binding.
	bindAudit, err := s.Audit(idB)
	if err != nil || len(bindAudit) != 4 || bindAudit[3].Action != "device.bind" || bindAudit[3].Actor != "devid-ca" ||
		!strings.Contains(bindAudit[3].Reason, "enrolment token "+second.Hash().Short()+" (issued by op") {
		t.Fatalf("audit of the binding: %+v, %v", bindAudit, err)
	}
}

// TestTokenExpiry: a token expires at its time exactly, and says when.
func TestTokenExpiry(t *testing.T) {
	s, clk := newStore(t)
	addPending(t, s, "web-9", "host", "VM-9")
	tok, rec, err := s.IssueToken("op", "web-9", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour - time.Nanosecond)
	if _, _, err := s.CheckEnrolment(tok.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindHost}, "urn:ek:sha256:x"); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	clk.Advance(time.Nanosecond)
	_, err = s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{}, ekKey(t, 0))
	wantTokenErr(t, "expired", err, inventory.ErrConflict, `enrolment token for device "web-9" expired at 2026-11-01T13:00:00Z: issue a new one with `+"`devid device token web-9`")
	if d, _ := s.Device("web-9"); !d.Pending() {
		t.Fatalf("an expired token bound the device: %+v", d)
	}
	if _, state, _ := s.DeviceToken(&inventory.Device{ID: rec.DeviceID}); state != inventory.TokenExpired {
		t.Fatalf("state %s", state)
	}
	// A retired pending device's token binds nothing.
	tok2, _, err := s.IssueToken("op", "web-9", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus("op", "web-9", inventory.StatusRetired, "sold"); err != nil {
		t.Fatal(err)
	}
	_, err = s.BindEnrolment("devid-ca", tok2.Hash(), inventory.EnrolmentClaim{}, ekKey(t, 0))
	wantTokenErr(t, "retired device", err, inventory.ErrConflict, `device "web-9" is retired, not pending`)
}

// TestTokenUsedOnceConcurrently: many TPMs present one token at once;
// exactly one is bound, every other is told the token is used.
func TestTokenUsedOnceConcurrently(t *testing.T) {
	s, _ := newStore(t)
	addPending(t, s, "laptop-c", "workstation", "C-1")
	tok, _, err := s.IssueToken("op", "laptop-c", 0)
	if err != nil {
		t.Fatal(err)
	}
	keys := []*deviceid.EK{ekKey(t, 0), ekKey(t, 1), ekKey(t, 2), ekKey(t, 3)}
	const rounds = 3 // each TPM tries several times
	var wg sync.WaitGroup
	results := make(chan error, len(keys)*rounds)
	winners := make(chan string, len(keys)*rounds)
	for range rounds {
		for _, k := range keys {
			wg.Go(func() {
				d, err := s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{}, k)
				if err == nil {
					winners <- d.ID
				}
				results <- err
			})
		}
	}
	wg.Wait()
	close(results)
	close(winners)
	bound := map[string]bool{}
	for id := range winners {
		bound[id] = true
	}
	if len(bound) != 1 {
		t.Fatalf("%d TPMs were bound with one token: %v", len(bound), bound)
	}
	var winner string
	for id := range bound {
		winner = id
	}
	for err := range results {
		if err != nil && (!errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "enrolment token already used (by device \"laptop-c\", "+winner)) {
			t.Errorf("a losing use: %v", err)
		}
	}
	devs, err := s.Devices()
	if err != nil || len(devs) != 1 || devs[0].ID != winner {
		t.Fatalf("devices after the race: %v, %v", devs, err)
	}
}

// TestRebind: a new TPM for a device is an explicit, audited action; the
// old TPM's record stays, retired, under a name of its own; the device
// goes back to pending (a token binds the new TPM) or is bound to a new EK
// at once.
func TestRebind(t *testing.T) {
	s, clk := newStore(t)
	addPending(t, s, "laptop-r", "workstation", "C02RRR")
	tok, _, err := s.IssueToken("op", "laptop-r", 0)
	if err != nil {
		t.Fatal(err)
	}
	oldKey := ekKey(t, 0)
	bound, err := s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{}, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Rebind("op", "laptop-r", "", nil); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "reason: required") {
		t.Fatalf("rebind without a reason: %v", err)
	}
	clk.Advance(time.Hour)
	retired, d, err := s.Rebind("op", "laptop-r", "motherboard replaced, ticket 42", nil)
	if err != nil {
		t.Fatal(err)
	}
	if retired.ID != bound.ID || retired.Status != inventory.StatusRetired || retired.Name != "laptop-r.replaced-20261101T130000Z" || retired.Serial != "" ||
		!strings.Contains(retired.StatusReason, "motherboard replaced, ticket 42") {
		t.Fatalf("the old TPM's record: %+v", retired)
	}
	if !d.Pending() || d.Name != "laptop-r" || d.Serial != "C02RRR" || d.EKPublic != nil || !d.Created.Equal(bound.Created) {
		t.Fatalf("the device after the rebind: %+v", d)
	}
	// The old TPM cannot come back: not with the used token, and not as
	// itself.
	_, err = s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{}, ekKey(t, 1))
	wantTokenErr(t, "the old token", err, inventory.ErrConflict, "already used")
	if _, err := inventory.CheckUsable(s, bound.ID); !errors.Is(err, inventory.ErrNotUsable) || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("the old TPM: %v", err)
	}
	tok2, _, err := s.IssueToken("op", "laptop-r", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.BindEnrolment("devid-ca", tok2.Hash(), inventory.EnrolmentClaim{}, oldKey)
	wantTokenErr(t, "the old TPM with a new token", err, inventory.ErrConflict, `this TPM is already device "laptop-r.replaced-20261101T130000Z"`)
	newKey := ekKey(t, 1)
	d2, err := s.BindEnrolment("devid-ca", tok2.Hash(), inventory.EnrolmentClaim{}, newKey)
	if err != nil || d2.ID != newKey.ID() || d2.Name != "laptop-r" || d2.Status != inventory.StatusActive {
		t.Fatalf("the new TPM: %+v, %v", d2, err)
	}

	// Again, with the next TPM's EK at once; twice in one second gives
	// the old records distinct names.
	k2 := ekKey(t, 2)
	r2, d3, err := s.Rebind("op", "laptop-r", "again", k2)
	if err != nil || r2.Name != "laptop-r.replaced-20261101T130000Z-2" || d3.ID != k2.ID() || d3.Status != inventory.StatusActive {
		t.Fatalf("rebind with an EK: %+v %+v %v", r2, d3, err)
	}
	if _, _, err := s.Rebind("op", "laptop-r", "a TPM that is a device", ekKey(t, 0)); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "already device") {
		t.Fatalf("rebind to a registered TPM: %v", err)
	}
	addPending(t, s, "laptop-p", "workstation", "C02PPP")
	if _, _, err := s.Rebind("op", "laptop-p", "x", nil); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "devid device token laptop-p") {
		t.Fatalf("rebind a pending device: %v", err)
	}
	if _, _, err := s.Rebind("op", r2.Name, "x", nil); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "retirement is final") {
		t.Fatalf("rebind a retired record: %v", err)
	}
	audit, err := s.Audit(d3.ID)
	if err != nil || len(audit) != 1 || audit[0].Action != "device.rebind" || audit[0].Actor != "op" || audit[0].Reason != "again" {
		t.Fatalf("audit of the rebound device: %+v, %v", audit, err)
	}
	// The TPM bound by token: its history while pending (the rebind that
	// made the record pending, the token), its binding, its retirement.
	audit, err = s.Audit(d2.ID)
	if err != nil || len(audit) != 4 || audit[0].Action != "device.rebind" || audit[1].Action != "device.token" || audit[2].Action != "device.bind" ||
		audit[3].Action != "device.retire" || !strings.Contains(audit[3].Reason, "TPM replaced") {
		t.Fatalf("audit of the retired TPM: %+v, %v", audit, err)
	}
}

func TestRetiredName(t *testing.T) {
	at := time.Date(2026, 12, 2, 9, 8, 7, 0, time.UTC)
	long := strings.Repeat("a", 253)
	n := inventory.RetiredName(long, at, func(string) bool { return false })
	if len(n) != 253 || !strings.HasSuffix(n, ".replaced-20261202T090807Z") {
		t.Fatalf("RetiredName of a long name: %q (%d)", n, len(n))
	}
	taken := map[string]bool{"x.replaced-20261202T090807Z": true, "x.replaced-20261202T090807Z-2": true}
	if n := inventory.RetiredName("x", at, func(s string) bool { return taken[s] }); n != "x.replaced-20261202T090807Z-3" {
		t.Fatalf("RetiredName with two taken: %q", n)
	}
}

func TestLastAttestation(t *testing.T) {
	s, clk := newStore(t)
	if a, err := s.LastAttestation("urn:ek:sha256:x"); a != nil || err != nil {
		t.Fatalf("none recorded: %+v, %v", a, err)
	}
	for i := range 2 {
		if err := s.RecordAttestation(inventory.Attestation{DeviceID: "urn:ek:sha256:x", Time: clk.Now(), Model: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	a, err := s.LastAttestation("urn:ek:sha256:x")
	if err != nil || a.Model != "m1" || !a.Time.Equal(clk.Now().Add(-time.Minute)) {
		t.Fatalf("LastAttestation = %+v, %v", a, err)
	}
	if audit, _ := s.Audit(""); len(audit) != 0 {
		t.Fatalf("an attestation was audited: %+v", audit)
	}
}

// TestTokenClaimedNotBound: devid-ca took the token for a TPM and died (or
// lost its database) before the binding committed: the token says used by
// that TPM, the device is still pending. The same TPM finishes the binding;
// any other TPM is refused.
func TestTokenClaimedNotBound(t *testing.T) {
	s, clk, db := newStoreDB(t)
	addPending(t, s, "web-9", "host", "VM-9")
	tok, _, err := s.IssueToken("op", "web-9", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Token(tok.Hash())
	if err != nil {
		t.Fatal(err)
	}
	x := ekKey(t, 0)
	rec.Used, rec.BoundTo = clk.Now(), x.ID()
	b, _ := json.Marshal(rec)
	putRaw(t, db, "devid_enrol_tokens", []byte(rec.Hash), string(b))
	clk.Advance(time.Minute)

	_, err = s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindHost}, ekKey(t, 1))
	wantTokenErr(t, "another TPM", err, inventory.ErrConflict, "enrolment token already used")
	d, err := s.BindEnrolment("devid-ca", tok.Hash(), inventory.EnrolmentClaim{Kind: inventory.KindHost}, x)
	if err != nil || d.ID != x.ID() || d.Status != inventory.StatusActive {
		t.Fatalf("the TPM the token was taken for: %+v, %v", d, err)
	}
	// And from then on it is that device.
	if d, _, err := s.CheckEnrolment(tok.Hash(), inventory.EnrolmentClaim{}, x.ID()); err != nil || d.ID != x.ID() {
		t.Fatalf("after: %+v, %v", d, err)
	}
	// Whose token, through the index, is the one that bound it.
	if got, st, err := s.DeviceToken(d); err != nil || got == nil || got.Hash != rec.Hash || st != inventory.TokenUsed {
		t.Fatalf("the device's token: %+v %s %v", got, st, err)
	}
}

// TestRebindQuarantined: a quarantined device is not rebound: the new TPM
// would bring it back without anyone lifting the quarantine.
func TestRebindQuarantined(t *testing.T) {
	s, _ := newStore(t)
	pem, _ := ek(t, 0)
	if _, err := s.AddDevice("op", inventory.NewDevice{EK: pem, Name: "laptop-q", Kind: "workstation"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus("op", "laptop-q", inventory.StatusQuarantined, "suspected compromise"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*deviceid.EK{nil, ekKey(t, 1)} {
		if _, _, err := s.Rebind("op", "laptop-q", "new board", k); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "devid device activate laptop-q") {
			t.Fatalf("rebind quarantined (ek %v): %v", k != nil, err)
		}
	}
	if d, _ := s.Device("laptop-q"); d.Status != inventory.StatusQuarantined || d.StatusReason != "suspected compromise" {
		t.Fatalf("after refused rebinds: %+v", d)
	}
}
