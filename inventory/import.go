package inventory

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Import results, per row.
const (
	Added     = "added"
	Updated   = "updated"
	Unchanged = "unchanged"
	// Held: the row asked to bring a quarantined or retired device back to
	// active, which an import never does (use an explicit activate). The
	// whole row was set aside: the device kept its status and every other
	// field, and the note says what the row would have changed.
	Held = "held"
)

// ImportResult says what an import did with one row.
type ImportResult struct {
	Line    int      `json:"line"`
	Subject string   `json:"subject"` // device ID or user email
	Name    string   `json:"name,omitempty"`
	Result  string   `json:"result"`            // Added, Updated, Unchanged or Held
	Changes []string `json:"changes,omitempty"` // field: old → new
	Note    string   `json:"note,omitempty"`
}

// ImportReport is the outcome of an import.
type ImportReport struct {
	DryRun  bool           `json:"dryRun"` // nothing was written
	Counts  map[string]int `json:"counts"` // by result
	Results []ImportResult `json:"results"`
}

func (r *ImportReport) add(res ImportResult) {
	r.Results = append(r.Results, res)
	r.Counts[res.Result]++
}

func newReport(dryRun bool) *ImportReport {
	return &ImportReport{DryRun: dryRun, Counts: map[string]int{Added: 0, Updated: 0, Unchanged: 0, Held: 0}}
}

// row is one parsed record of an import, the line it starts on, and the
// fields it gives: a CSV file's columns, or a JSON object's keys. A field a row does not give keeps its value on update.
type row[T any] struct {
	line int
	v    T
	has  map[string]bool
}

// rowFormat describes an import's columns (CSV) and fields (JSON).
type rowFormat[T any] struct {
	columns  []string // allowed CSV header names, lower case
	required []string
	fromCSV  func(map[string]string) T
}

var deviceFormat = rowFormat[NewDevice]{
	columns:  []string{"id", "ek", "name", "kind", "collection", "owner", "status", "hostnames", "serial", "assettag", "os", "source", "sourceid"},
	required: []string{"name", "kind"},
	fromCSV: func(m map[string]string) NewDevice {
		return NewDevice{ID: m["id"], EK: m["ek"], Name: m["name"], Kind: m["kind"],
			Collection: m["collection"], Owner: m["owner"], Status: m["status"], HostNames: splitList(m["hostnames"]),
			Serial: m["serial"], AssetTag: m["assettag"], OS: m["os"], Source: m["source"], SourceID: m["sourceid"]}
	},
}

var userFormat = rowFormat[NewUser]{
	columns:  []string{"email", "login", "groups"},
	required: []string{"email", "login"},
	fromCSV: func(m map[string]string) NewUser {
		return NewUser{Email: m["email"], Login: m["login"], Groups: splitList(m["groups"])}
	},
}

// splitList splits a CSV cell holding a list: items separated by ';',
// spaces or tabs.
func splitList(cell string) []string {
	return strings.FieldsFunc(cell, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' })
}

// parseRows reads a CSV file with a header line, or a JSON array of objects:
// a file whose first non-blank byte is '[' is JSON. Unknown columns or fields
// are errors. Text that is not UTF-8 is left for the checks of each field,
// which name the field and line (encoding/json turns it into U+FFFD, which
// they refuse too). It reads r as a stream, up to opts' bounds.
func parseRows[T any](file string, r io.Reader, f rowFormat[T], opts ImportOptions) ([]row[T], error) {
	fail := func(line int, format string, args ...any) error {
		return &Error{Kind: ErrInvalid, File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	br, lr, first, err := openImport(r, opts, " \t\r\n\ufeff")
	if err != nil {
		return nil, readErr(file, opts, err)
	}
	var rows []row[T]
	switch first {
	case 0:
		return nil, fail(0, "empty import")
	case '[':
		rows, err = parseJSONRows(br, lr, f, fail, opts)
	default:
		rows, err = parseCSVRows(br, f, fail, opts)
	}
	if err != nil && errors.Is(err, errTooLarge) {
		return nil, readErr(file, opts, err)
	}
	var e *Error
	if err != nil && e == nil && !errors.As(err, &e) {
		return nil, readErr(file, opts, err)
	}
	if e != nil && e.File == "" {
		e.File = file
	}
	return rows, err
}

func parseCSVRows[T any](br *bufio.Reader, f rowFormat[T], fail func(int, string, ...any) error, opts ImportOptions) ([]row[T], error) {
	if b, _ := br.Peek(3); string(b) == "\ufeff" {
		br.Discard(3)
	}
	r := csv.NewReader(br)
	r.Comment = '#'
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, csvError(err, fail)
	}
	hline, _ := r.FieldPos(0)
	cols := make([]string, len(header))
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case !slices.Contains(f.columns, h):
			return nil, fail(hline, "unknown column %q (known: %s)", h, strings.Join(f.columns, ", "))
		case slices.Contains(cols[:i], h):
			return nil, fail(hline, "column %q appears twice", h)
		}
		cols[i] = h
	}
	for _, req := range f.required {
		if !slices.Contains(cols, req) {
			return nil, fail(hline, "missing column %q (required: %s)", req, strings.Join(f.required, ", "))
		}
	}
	has := make(map[string]bool, len(cols))
	for _, c := range cols {
		has[c] = true
	}
	var rows []row[T]
	m := make(map[string]string, len(cols))
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvError(err, fail)
		}
		line, _ := r.FieldPos(0)
		if len(rows) == opts.maxRows() {
			return nil, tooManyRows("", line, opts)
		}
		for i, c := range cols {
			m[c] = strings.Clone(strings.TrimSpace(rec[i]))
		}
		rows = append(rows, row[T]{line, f.fromCSV(m), has})
	}
	if len(rows) == 0 {
		return nil, fail(0, "no rows after the header")
	}
	return rows, nil
}

func csvError(err error, fail func(int, string, ...any) error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, errTooLarge) {
			return errTooLarge
		}
		return fail(pe.Line, "%v", pe.Err)
	}
	if err == io.EOF {
		return fail(0, "empty import")
	}
	if errors.Is(err, errTooLarge) {
		return err
	}
	return fail(0, "%v", err)
}

func parseJSONRows[T any](br *bufio.Reader, lr *lineReader, f rowFormat[T], fail func(int, string, ...any) error, opts ImportOptions) ([]row[T], error) {
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	// Offsets of the decoder are from the start of br, which is where lr
	// was when it was made: at 0.
	lineAt := lr.lineAt
	tooLarge := func(err error) bool { return errors.Is(err, errTooLarge) }
	if _, err := dec.Token(); err != nil { // '['
		if tooLarge(err) {
			return nil, err
		}
		return nil, fail(lineAt(dec.InputOffset()), "%v", err)
	}
	var rows []row[T]
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if tooLarge(err) {
				return nil, err
			}
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fail(lineAt(se.Offset), "%v", err)
			}
			return nil, fail(lineAt(dec.InputOffset()), "%v", err)
		}
		line := lineAt(dec.InputOffset() - int64(len(raw)))
		if len(rows) == opts.maxRows() {
			return nil, tooManyRows("", line, opts)
		}
		v, has, err := decodeObject[T](raw, f.columns)
		if err != nil {
			return nil, fail(line, "%v", err)
		}
		rows = append(rows, row[T]{line, v, has})
	}
	if _, err := dec.Token(); err != nil { // ']'
		if tooLarge(err) {
			return nil, err
		}
		return nil, fail(lineAt(dec.InputOffset()), "%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil && tooLarge(err) {
			return nil, err
		}
		return nil, fail(lineAt(dec.InputOffset()), "trailing data after the JSON array")
	}
	if len(rows) == 0 {
		return nil, fail(0, "empty JSON array")
	}
	return rows, nil
}

// decodeObject decodes one JSON object of an import strictly, and says
// which of the fields (columns) it has. encoding/json matches keys to fields
// without regard to case (Unicode folding: "groupſ" is groups), and so does
// this.
func decodeObject[T any](raw json.RawMessage, columns []string) (T, map[string]bool, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, nil, err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return v, nil, err
	}
	has := make(map[string]bool, len(keys))
	for k := range keys {
		for _, c := range columns {
			if strings.EqualFold(k, c) {
				has[c] = true
			}
		}
	}
	return v, has, nil
}

// ImportDevices registers or updates devices from an export (file names it
// in errors). Rows are matched to devices by device ID (from the EK), and
// a row without an EK by serial number, then asset tag; a row without an
// EK that matches no device adds it as pending (see BindEK). A row with an
// EK whose serial is a pending device's binds that EK to it. Every row is
// checked against the inventory as it would be after the import before
// anything is written: a bad row fails the whole import and nothing
// changes. With dryRun nothing is written either way.
//
// A known device keeps the collection, owner, host names, serial, asset
// tag, OS and source when the file has no such column (JSON: no such key);
// an explicitly empty cell (JSON: "", [] or null) clears them. Host names
// are a CSV cell of entries separated by ';' or spaces (JSON: hostNames, an
// array). An empty or absent status keeps a device's current status. An
// import never brings a quarantined or retired device back to active: such
// a row is Held and changes nothing.
func (s *Store) ImportDevices(actor, file string, data []byte, dryRun bool) (*ImportReport, error) {
	return s.ImportDevicesFrom(actor, file, bytes.NewReader(data), ImportOptions{DryRun: dryRun})
}

// ImportDevicesFrom is ImportDevices for an export read from r, as a
// stream, with the bounds and batches of opts (see ImportOptions).
func (s *Store) ImportDevicesFrom(actor, file string, r io.Reader, opts ImportOptions) (*ImportReport, error) {
	return importRows(s, actor, file, r, opts, deviceFormat, func() func(snap *snapshot, r row[NewDevice], now time.Time, report *ImportReport, w *writer) error {
		imp := &deviceImport{file: file}
		return func(snap *snapshot, r row[NewDevice], now time.Time, report *ImportReport, w *writer) error {
			res, err := imp.apply(snap, r, now, w)
			if err != nil {
				return err
			}
			report.add(*res)
			return nil
		}
	})
}

// deviceImport applies the rows of one device import in turn.
type deviceImport struct {
	file   string
	seen   map[string]int     // device ID, "serial:S" or "asset:A" → line
	final  map[string]*Device // name → device after the import
	serial map[string]*Device // folded serial → device after the import
}

func (imp *deviceImport) fail(line int, e *Error) error {
	e.File, e.Line = imp.file, line
	return e
}

// failErr is fail for an error that may be an *Error.
func (imp *deviceImport) failErr(line int, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return imp.fail(line, e)
	}
	return err
}

// match finds the device a row is about, and records the row's keys so a
// later row about the same device is refused.
func (imp *deviceImport) match(snap *snapshot, r row[NewDevice], f *deviceFields) (*Device, error) {
	if imp.seen == nil {
		imp.seen, imp.final, imp.serial = map[string]int{}, maps.Clone(snap.byName), maps.Clone(snap.bySerial)
	}
	seen := func(key, field string) error {
		if prev, dup := imp.seen[key]; dup {
			return imp.fail(r.line, &Error{Kind: ErrInvalid, Field: field, Msg: fmt.Sprintf("same device as line %d (%s)", prev, strings.SplitN(key, ":", 2)[1])})
		}
		imp.seen[key] = r.line
		return nil
	}
	if f.ek != nil {
		id := f.ek.ID()
		if r.v.ID != "" && r.v.ID != id {
			return nil, imp.fail(r.line, invalid("id", "%s does not match the EK, whose device ID is %s", r.v.ID, id))
		}
		if err := seen("ek:"+id, "ek"); err != nil {
			return nil, err
		}
	}
	if f.serial != "" {
		if err := seen("serial:"+foldSerial(f.serial), "serial"); err != nil {
			return nil, err
		}
	}
	if f.assetTag != "" {
		if err := seen("asset:"+foldSerial(f.assetTag), "assetTag"); err != nil {
			return nil, err
		}
	}
	if f.ek != nil {
		if d, ok := snap.byID[f.ek.ID()]; ok {
			return d, nil
		}
	}
	if d, ok := snap.bySerial[foldSerial(f.serial)]; ok && f.serial != "" && (f.ek == nil || d.Pending()) {
		return d, nil
	}
	if f.ek == nil && f.serial == "" && f.assetTag != "" {
		// Asset tags are not unique: only a row without a serial is
		// matched by one, only to a device that is not retired, and
		// only if exactly one device has it.
		var found []*Device
		for _, d := range snap.byID {
			if d.Status != StatusRetired && d.AssetTag != "" && foldSerial(d.AssetTag) == foldSerial(f.assetTag) {
				found = append(found, d)
			}
		}
		switch len(found) {
		case 0:
		case 1:
			return found[0], nil
		default:
			names := make([]string, len(found))
			for i, d := range found {
				names[i] = strconv.Quote(d.Name)
			}
			slices.Sort(names)
			return nil, imp.fail(r.line, &Error{Kind: ErrConflict, Field: "assetTag", Msg: fmt.Sprintf("asset tag %q is on %d devices (%s): give the serial number", f.assetTag, len(found), strings.Join(names, ", "))})
		}
	}
	return nil, nil
}

func (imp *deviceImport) apply(snap *snapshot, r row[NewDevice], now time.Time, w *writer) (*ImportResult, error) {
	f, ferr := checkNewDevice(r.v)
	if ferr != nil {
		return nil, imp.fail(r.line, ferr)
	}
	old, err := imp.match(snap, r, f)
	if err != nil {
		return nil, err
	}
	owner, oerr := snap.owner(f.owner)
	if oerr != nil {
		return nil, imp.failErr(r.line, oerr)
	}
	f.owner = owner
	reason := "import " + imp.file
	if old == nil {
		if other, ok := imp.final[f.name]; ok {
			return nil, imp.fail(r.line, nameTaken(f.name, other.ID))
		}
		if other, ok := imp.serial[foldSerial(f.serial)]; ok && f.serial != "" {
			return nil, imp.fail(r.line, serialTaken(f.serial, other))
		}
		if ferr := f.checkNew(); ferr != nil {
			return nil, imp.fail(r.line, ferr)
		}
		d := f.newDevice(now)
		imp.final[d.Name] = d
		if d.Serial != "" {
			imp.serial[foldSerial(d.Serial)] = d
		}
		w.putDevice(nil, d, "device.add", reason)
		return &ImportResult{Line: r.line, Subject: d.ID, Name: d.Name, Result: Added}, nil
	}
	res := &ImportResult{Line: r.line, Subject: old.ID, Name: f.name}
	var bound *Device
	if f.ek != nil && old.Pending() {
		// The EK of a device imported before without one: bind it.
		var berr error
		if bound, berr = snap.bind(w, old, f.ek, now, "device.bind", reason); berr != nil {
			return nil, imp.failErr(r.line, berr)
		}
		res.Subject = bound.ID
	}
	base := old
	if bound != nil {
		base = bound
	}
	d := *base
	d.Name = f.name
	if r.has["kind"] { // always in devid's own exports; an MDM's gives it only with --kind
		d.Kind = f.kind
	}
	for col, set := range map[string]func(){
		"collection": func() { d.Collection = f.collection },
		"owner":      func() { d.Owner = f.owner },
		"hostnames":  func() { d.HostNames = f.hostNames },
		"serial":     func() { d.Serial = f.serial },
		"assettag":   func() { d.AssetTag = f.assetTag },
		"os":         func() { d.OS = f.os },
		"source":     func() { d.Source = f.source },
		"sourceid":   func() { d.SourceID = f.sourceID },
	} {
		if r.has[col] {
			set()
		}
	}
	if f.ek != nil && f.ek.Certificate != nil {
		d.EKCert = f.ek.Certificate.Raw
	}
	held := false
	switch {
	case f.status == StatusQuarantined && base.Status == StatusQuarantined && base.QuarantineUntil != nil:
		// An export that says quarantined means for good, as --missing
		// quarantine does: the temporary quarantine loses its end.
		d.StatusReason, d.QuarantineUntil = reason, nil
	case f.status == "" || f.status == base.Status:
	case f.status == StatusActive || base.Status == StatusRetired || f.status == StatusPending:
		held = true
	case base.Pending() && f.status != StatusRetired:
		held = true
	default:
		d.Status, d.StatusReason, d.StatusChanged = f.status, reason, now
	}
	if held {
		if bound != nil {
			return nil, imp.fail(r.line, invalid("status", "%q: the row binds an EK to pending device %q, which makes it active", f.status, old.Name))
		}
		// Set the whole row aside: the device stays exactly as it is.
		res.Name, res.Result = old.Name, Held
		res.Note = fmt.Sprintf("kept %s: an import does not bring a device to %s from %s (use devid device activate, or a token for a pending device)", old.Status, f.status, old.Status)
		if ch := deviceChanges(old, &d); len(ch) > 0 {
			res.Note += "; the row's other changes were not applied: " + strings.Join(ch, ", ")
		}
		return res, nil
	}
	if imp.final[old.Name] != nil && imp.final[old.Name].ID == old.ID {
		delete(imp.final, old.Name)
	}
	if other, ok := imp.final[d.Name]; ok && other.ID != d.ID {
		return nil, imp.fail(r.line, nameTaken(d.Name, other.ID))
	}
	imp.final[d.Name] = &d
	if old.Serial != "" && imp.serial[foldSerial(old.Serial)] != nil && imp.serial[foldSerial(old.Serial)].ID == old.ID {
		delete(imp.serial, foldSerial(old.Serial))
	}
	if other, ok := imp.serial[foldSerial(d.Serial)]; ok && d.Serial != "" && other.ID != d.ID && other.ID != old.ID {
		return nil, imp.fail(r.line, serialTaken(d.Serial, other))
	}
	if d.Serial != "" {
		imp.serial[foldSerial(d.Serial)] = &d
	}
	res.Changes = deviceChanges(base, &d)
	res.Result = Unchanged
	if bound != nil {
		res.Result = Updated
		res.Changes = append([]string{fmt.Sprintf("bound to EK: %s → %s, pending → active", old.ID, bound.ID)}, res.Changes...)
	}
	if len(deviceChanges(base, &d)) > 0 {
		d.Updated = now
		res.Result = Updated
		w.putDevice(base, &d, "device.update", reason)
	}
	return res, nil
}

func nameTaken(name, id string) *Error {
	return &Error{Kind: ErrConflict, Field: "name", Msg: fmt.Sprintf("%q is already the name of device %s", name, id)}
}

// importRows parses an import, then runs it (Store.runImport). newApply
// makes the function of one pass over the rows: what it keeps between rows
// starts afresh at each.
func importRows[T any](s *Store, actor, file string, r io.Reader, opts ImportOptions, f rowFormat[T],
	newApply func() func(snap *snapshot, r row[T], now time.Time, report *ImportReport, w *writer) error) (*ImportReport, error) {
	if err := checkImportFile(file); err != nil {
		return nil, err
	}
	rows, err := parseRows(file, r, f, opts)
	if err != nil {
		return nil, err
	}
	return s.runImport(actor, newReport(opts.DryRun), opts, importPlan{rows: len(rows), begin: func() importPass {
		apply := newApply()
		return importPass{apply: func(snap *snapshot, i int, now time.Time, report *ImportReport, w *writer) error {
			return apply(snap, rows[i], now, report, w)
		}}
	}})
}

// checkImportFile checks an import's file name, which goes into audit
// reasons ("import NAME").
func checkImportFile(file string) *Error {
	if err := checkLine("file", file); err != nil {
		return err
	}
	if len(file) > MaxReasonLen/2 {
		return invalid("file", "name %d bytes long; at most %d", len(file), MaxReasonLen/2)
	}
	return nil
}

func deviceChanges(a, b *Device) []string {
	var out []string
	diff := func(field, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s: %q → %q", field, x, y))
		}
	}
	diff("name", a.Name, b.Name)
	diff("kind", string(a.Kind), string(b.Kind))
	diff("collection", a.Collection, b.Collection)
	diff("owner", a.Owner, b.Owner)
	diff("status", string(a.Status), string(b.Status))
	diff("serial", a.Serial, b.Serial)
	diff("assetTag", a.AssetTag, b.AssetTag)
	diff("os", a.OS, b.OS)
	diff("source", a.Source, b.Source)
	diff("sourceId", a.SourceID, b.SourceID)
	if !slices.Equal(a.HostNames, b.HostNames) {
		out = append(out, fmt.Sprintf("hostNames: %q → %q", a.HostNames, b.HostNames))
	}
	if !bytes.Equal(a.EKCert, b.EKCert) {
		out = append(out, "ekCert: replaced")
	}
	if a.QuarantineUntil != nil && (b.QuarantineUntil == nil || !a.QuarantineUntil.Equal(*b.QuarantineUntil)) {
		to := "none"
		if b.QuarantineUntil != nil {
			to = b.QuarantineUntil.UTC().Format(time.RFC3339)
		}
		out = append(out, fmt.Sprintf("quarantineUntil: %s → %s", a.QuarantineUntil.UTC().Format(time.RFC3339), to))
	}
	return out
}

// ImportUsers adds or updates users from an export, matched by email, with
// the same all-or-nothing checking as ImportDevices. Users not in the file
// are left alone, and so are a known user's groups when the file has no
// groups column (JSON: no groups key); an empty cell ([] or null) clears
// them. A known user given another login is renamed (UserChange.Renames):
// the BeforeUserCommit function revokes, in the import's transaction, every
// certificate naming the old login.
func (s *Store) ImportUsers(actor, file string, data []byte, dryRun bool) (*ImportReport, error) {
	return s.ImportUsersFrom(actor, file, bytes.NewReader(data), ImportOptions{DryRun: dryRun})
}

// ImportUsersFrom is ImportUsers for an export read from r, as a stream,
// with the bounds and batches of opts (see ImportOptions).
func (s *Store) ImportUsersFrom(actor, file string, r io.Reader, opts ImportOptions) (*ImportReport, error) {
	return importRows(s, actor, file, r, opts, userFormat, func() func(snap *snapshot, r row[NewUser], now time.Time, report *ImportReport, w *writer) error {
		var seen map[string]int
		var logins map[string]string
		return func(snap *snapshot, r row[NewUser], now time.Time, report *ImportReport, w *writer) error {
			if seen == nil {
				seen, logins = map[string]int{}, maps.Clone(snap.logins)
			}
			nu, ferr := checkNewUser(r.v)
			if ferr != nil {
				ferr.File, ferr.Line = file, r.line
				return ferr
			}
			if prev, dup := seen[nu.Email]; dup {
				return &Error{Kind: ErrInvalid, File: file, Line: r.line, Field: "email", Msg: fmt.Sprintf("same user as line %d", prev)}
			}
			seen[nu.Email] = r.line
			old, exists := snap.users[nu.Email]
			if exists {
				nu.Email = old.Email // as stored, should it predate folding
				if logins[old.Login] == old.Email {
					delete(logins, old.Login)
				}
			}
			if other, ok := logins[nu.Login]; ok && other != nu.Email {
				return &Error{Kind: ErrConflict, File: file, Line: r.line, Field: "login", Msg: fmt.Sprintf("login %q already belongs to %s", nu.Login, other)}
			}
			logins[nu.Login] = nu.Email
			res := ImportResult{Line: r.line, Subject: nu.Email, Name: nu.Login}
			if !exists {
				res.Result = Added
				w.putUser(nil, &User{Email: nu.Email, Login: nu.Login, Groups: nu.Groups, Created: now, Updated: now}, "user.add")
				report.add(res)
				return nil
			}
			u := *old
			u.Login = nu.Login
			if r.has["groups"] {
				u.Groups = nu.Groups
			}
			if old.Login != u.Login {
				res.Changes = append(res.Changes, fmt.Sprintf("login: %q → %q", old.Login, u.Login))
			}
			if !slices.Equal(old.Groups, u.Groups) {
				res.Changes = append(res.Changes, fmt.Sprintf("groups: %v → %v", old.Groups, u.Groups))
			}
			res.Result = Unchanged
			if len(res.Changes) > 0 {
				u.Updated = now
				res.Result = Updated
				w.putUser(old, &u, "user.update")
			}
			report.add(res)
			return nil
		}
	})
}
