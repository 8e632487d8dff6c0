package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Results of an MDM import (ImportResult.Result) for a device of its
// source that the export no longer lists. Their ImportResult has no line.
const (
	// Missing: reported, and left as it is (--missing keep; or a device
	// quarantined already, or pending, see ImportMDM).
	Missing = "missing"
	// MissingQuarantined: quarantined by the import (--missing
	// quarantine).
	MissingQuarantined = "quarantined"
)

// MDMOptions says how to import an MDM's export.
type MDMOptions struct {
	Format string // SourceJamf or SourceIntune
	// Missing is what happens to the devices of this source the export
	// does not list: MissingKeep ("" too) or MissingQuarantine.
	Missing string
	// Kind, when set, is every listed device's kind; else a device the
	// export adds is a workstation, and a known one keeps its kind.
	Kind string
	// Collection, when set, is every listed device's collection, and
	// limits Missing to the devices of this source in that collection (an
	// export per collection, say per site, leaves the others alone).
	Collection string
}

// ImportMDM registers or updates devices from an MDM's export (see the
// formats above), with ImportDevices' rules: every device of the export is
// a row without an EK, matched to a device by serial number, then asset
// tag, or added as pending; the whole file or nothing; file:line errors; a
// dry run writes nothing. Each device's Source is the MDM's (jamf,
// intune), SourceID its ID there.
//
// Names are made devid names: lower case, every run of characters other
// than a-z 0-9 . _ one '-' ("Alice's MacBook Pro" is
// alice-s-macbook-pro); the result's note says so. Two devices whose names
// become one are an error naming both lines. The owner is the first of the
// device user's identities (Intune: the UPN, then the email address; Jamf:
// the email address, then the username if it is an email) that is a devid
// user, compared without regard to case; an identity that names no user
// is an error naming the line and the export's field. A value the export
// leaves empty (owner, asset tag, OS, ID) keeps what the device has.
//
// The devices of this source (in opts.Collection, if set) that are not
// retired and that the export does not list are reported, as Missing
// results, before anything is written (a dry run reports them the same
// way). With MissingQuarantine an active one is quarantined in the same
// transaction (reason "not in SOURCE export FILE"), a MissingQuarantined
// result, and one in a temporary quarantine is quarantined with no end. A
// pending device cannot be quarantined (it has no TPM and can get no
// certificate until a token binds one) and is not retired either, which
// is final and would keep its serial number for ever: it is reported
// Missing, left pending, and the note says to retire it if it is gone.
func (s *Store) ImportMDM(actor, file string, data []byte, opts MDMOptions, dryRun bool) (*ImportReport, error) {
	return s.ImportMDMFrom(actor, file, bytes.NewReader(data), opts, ImportOptions{DryRun: dryRun})
}

// ImportMDMFrom is ImportMDM for an export read from r, as a stream, with
// the bounds and batches of iopts (see ImportOptions). Imported in
// batches, the devices the export no longer lists are dealt with in the
// last.
func (s *Store) ImportMDMFrom(actor, file string, r io.Reader, opts MDMOptions, iopts ImportOptions) (*ImportReport, error) {
	f, ferr := mdmFormatOf(opts.Format)
	if ferr != nil {
		return nil, ferr
	}
	switch opts.Missing {
	case "", MissingKeep, MissingQuarantine:
	default:
		return nil, invalid("missing", "%q: want keep or quarantine", opts.Missing)
	}
	kind := string(KindWorkstation)
	if opts.Kind != "" {
		k, err := ParseKind(opts.Kind)
		if err != nil {
			return nil, invalid("kind", "%s", err)
		}
		kind = string(k)
	}
	if opts.Collection != "" {
		if err := checkCollectionName(opts.Collection); err != nil {
			return nil, err
		}
	}
	if err := checkImportFile(file); err != nil {
		return nil, err
	}
	rows, err := parseMDM(file, r, f, iopts)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(rows))
	byName := map[string]int{}
	for i, m := range rows {
		fail := func(format string, args ...any) error {
			return &Error{Kind: ErrInvalid, File: file, Line: m.line, Field: m.label["name"], Msg: fmt.Sprintf(format, args...)}
		}
		if err := checkLine(m.label["name"], m.name); err != nil {
			err.File, err.Line = file, m.line
			return nil, err
		}
		n := normaliseName(m.name)
		if n == "" {
			return nil, fail("%q has no letter or digit to make a devid name of (a-z 0-9 . _ -): rename it in %s", m.name, f.title)
		}
		if j, dup := byName[n]; dup {
			return nil, fail("%q and line %d's %q are both %q as devid names (lower case, other characters '-'): rename one in %s", m.name, rows[j].line, rows[j].name, n, f.title)
		}
		byName[n], names[i] = i, n
	}
	byName = nil
	report := newReport(iopts.DryRun)
	report.Counts[Missing], report.Counts[MissingQuarantined] = 0, 0
	return s.runImport(actor, report, iopts, importPlan{rows: len(rows), begin: func() importPass {
		imp := &deviceImport{file: file}
		listed := map[string]bool{}
		apply := func(snap *snapshot, i int, now time.Time, report *ImportReport, w *writer) error {
			m := rows[i]
			owner, oerr := m.owner(snap)
			if oerr != nil {
				oerr.File, oerr.Line = file, m.line
				return oerr
			}
			r := row[NewDevice]{line: m.line, v: NewDevice{Name: names[i], Kind: kind, Collection: opts.Collection, Owner: owner,
				Serial: m.serial, AssetTag: m.assetTag, OS: m.os, Source: f.source, SourceID: m.sourceID},
				has: map[string]bool{"name": true, "source": true, "kind": opts.Kind != "", "collection": opts.Collection != "",
					"owner": owner != "", "serial": m.serial != "", "assettag": m.assetTag != "", "os": m.os != "", "sourceid": m.sourceID != ""}}
			res, err := imp.apply(snap, r, now, w)
			if err != nil {
				return m.relabel(err)
			}
			if names[i] != m.name {
				note := fmt.Sprintf("name %q normalised to %q", m.name, names[i])
				if res.Note != "" {
					note += "; " + res.Note
				}
				res.Note = note
			}
			listed[res.Subject] = true
			report.add(*res)
			return nil
		}
		finish := func(snap *snapshot, now time.Time, report *ImportReport, w *writer) error {
			reason := fmt.Sprintf("not in %s export %s", f.source, file)
			for _, name := range slices.Sorted(maps.Keys(snap.byName)) {
				d := snap.byName[name]
				if d.Source != f.source || listed[d.ID] || d.Status == StatusRetired || opts.Collection != "" && d.Collection != opts.Collection {
					continue
				}
				report.add(missing(d, opts.Missing == MissingQuarantine, reason, now, w))
			}
			return nil
		}
		return importPass{apply: apply, finish: finish}
	}})
}

// missing reports a device the export no longer lists and, with
// quarantine, adds its quarantine to w.
func missing(d *Device, quarantine bool, reason string, now time.Time, w *writer) ImportResult {
	res := ImportResult{Subject: d.ID, Name: d.Name, Result: Missing}
	switch {
	case d.Pending():
		res.Note = "not in the export; left pending: with no TPM bound it can get no certificate, and retiring is final (retire it with `devid device retire " + d.Name + "` if it is gone for good)"
	case d.Status == StatusQuarantined && d.QuarantineUntil == nil:
		res.Note = "not in the export; quarantined already"
	case !quarantine && d.QuarantineUntil != nil:
		res.Note = fmt.Sprintf("not in the export; kept quarantined until %s (--missing quarantine would quarantine it with no end)", d.QuarantineUntil.UTC().Format(time.RFC3339))
	case !quarantine:
		res.Note = fmt.Sprintf("not in the export; kept %s (--missing quarantine would quarantine it)", d.Status)
	default:
		q := *d
		q.Status, q.StatusReason, q.Updated, q.QuarantineUntil = StatusQuarantined, reason, now, nil
		if d.Status != StatusQuarantined {
			q.StatusChanged = now
		}
		res.Result, res.Changes = MissingQuarantined, deviceChanges(d, &q)
		if d.QuarantineUntil != nil {
			res.Changes = append(res.Changes, fmt.Sprintf("quarantineUntil: %s → none", d.QuarantineUntil.UTC().Format(time.RFC3339)))
		}
		res.Note = "not in the export"
		w.putDevice(d, &q, "device.quarantine", reason)
	}
	return res
}

// owner is the row's owner: the first of its user identities that is a
// devid user, as the user's record has it; "" when the export names none.
func (m *mdmRow) owner(snap *snapshot) (string, *Error) {
	if len(m.owners) == 0 {
		return "", nil
	}
	for _, v := range m.owners {
		if u, ok := snap.users[foldEmail(v.value)]; ok {
			return u.Email, nil
		}
	}
	first := m.owners[0]
	msg := fmt.Sprintf("no user %q", first.value)
	for _, v := range m.owners[1:] {
		msg += fmt.Sprintf(", nor %s %q", v.label, v.value)
	}
	return "", &Error{Kind: ErrInvalid, Field: first.label, Msg: msg + " (add or import the user first, or clear the device's user in the export)"}
}

// relabel names the export's field in an error about a device field.
func (m *mdmRow) relabel(err error) error {
	var e *Error
	if errors.As(err, &e) {
		for field, label := range m.label {
			if label != "" && strings.EqualFold(e.Field, field) {
				e.Field = label
				break
			}
		}
	}
	return err
}
