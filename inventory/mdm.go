package inventory

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MDM exports. ImportMDM reads the device exports of two MDMs, as their
// consoles and APIs give them, and turns each device into a row of a
// device import (see ImportDevices), so that the same rules apply:
//
//   - Jamf Pro: the JSON of GET /api/v1/computers-inventory
//     ({"totalCount": N, "results": [{"id", "udid", "general": {"name",
//     "assetTag"}, "hardware": {"serialNumber"}, "userAndLocation":
//     {"username", "email"}, "operatingSystem": {"name", "version"}}]}),
//     or a JSON array of such computers (pages joined); and the CSV the
//     console exports from an advanced computer search or the inventory
//     list, whose headers are the display fields' names ("Computer Name",
//     "Serial Number", "Asset Tag", "Username", "Email Address",
//     "Operating System", "Operating System Version", "Jamf Pro Computer
//     ID" or, before Jamf Pro 10.x, "JSS Computer ID", "UDID").
//   - Microsoft Intune: the Microsoft Graph JSON of GET
//     /deviceManagement/managedDevices ({"@odata.context": …, "value":
//     [{"id", "deviceName", "serialNumber", "userPrincipalName",
//     "emailAddress", "operatingSystem", "osVersion"}]}), or a JSON array
//     of managedDevice objects; and the CSV the Intune admin center exports
//     from Devices > All devices ("Device ID", "Device name", "Serial
//     number", "Primary user UPN", "Primary user email address", "OS",
//     "OS version").
//
// Exports carry dozens of other fields; they are ignored. The name and the
// serial number (for Jamf, or the asset tag) must be there, in every
// device. A file that is one page of a longer list (Jamf's totalCount
// above the computers it holds, Graph's @odata.nextLink) is refused: an
// import must see every device for its report of those missing to mean
// anything.

// MDM sources (MDMOptions.Format, Device.Source).
const (
	SourceJamf   = "jamf"
	SourceIntune = "intune"
)

// What an MDM import does with the devices of its source that the export
// no longer lists (MDMOptions.Missing).
const (
	MissingKeep       = "keep"
	MissingQuarantine = "quarantine"
)

// mdmRow is one device of an MDM export, before it is a row of a device
// import.
type mdmRow struct {
	line     int
	name     string // as the MDM has it
	serial   string
	assetTag string
	os       string
	sourceID string
	// owners are the device user's identities, the preferred first: the
	// first that is a devid user is the owner.
	owners []mdmValue
	// label is the export's name of each devid field (name, serial,
	// assetTag, os, sourceId), for errors.
	label map[string]string
}

type mdmValue struct{ label, value string }

// mdmFormat is how one MDM's exports read.
type mdmFormat struct {
	source string
	title  string // the MDM's name in messages
	what   string // what it calls a device
	// CSV: the devid fields and the headers that give them, in order of
	// preference.
	columns  []mdmColumn
	required []string // devid fields (of columns) an export must have
	// JSON: the key of the array of devices in the API's answer, and what
	// a device is.
	listKey  string
	fromJSON func(line int, raw json.RawMessage) (mdmRow, error)
	complete func(top map[string]json.RawMessage, n int) error
	// hint is how to export the file, for errors.
	hint string
}

type mdmColumn struct {
	field   string
	headers []string
}

func mdmFormatOf(name string) (*mdmFormat, *Error) {
	switch name {
	case SourceJamf:
		return &jamfFormat, nil
	case SourceIntune:
		return &intuneFormat, nil
	}
	return nil, invalid("format", "%q: want jamf or intune", name)
}

var jamfFormat = mdmFormat{
	source: SourceJamf, title: "Jamf Pro", what: "computer",
	columns: []mdmColumn{
		{"name", []string{"Computer Name"}},
		{"serial", []string{"Serial Number"}},
		{"assetTag", []string{"Asset Tag"}},
		{"sourceId", []string{"Jamf Pro Computer ID", "JSS Computer ID", "UDID"}},
		{"osName", []string{"Operating System Name", "Operating System"}},
		{"osVersion", []string{"Operating System Version"}},
		{"owner", []string{"Email Address", "Username"}},
	},
	required: []string{"name", "serial"},
	listKey:  "results",
	fromJSON: jamfComputer,
	complete: func(top map[string]json.RawMessage, n int) error {
		raw, ok := top["totalCount"]
		if !ok || string(raw) == "null" {
			return nil
		}
		var total int
		if err := json.Unmarshal(raw, &total); err != nil {
			return fmt.Errorf("totalCount: %v", err)
		}
		if total != n {
			return fmt.Errorf("the file holds %d of the %d computers Jamf Pro counts (totalCount): fetch every page (page=0, 1, … with page-size=%d or more) and join their results into one array, or raise page-size", n, total, max(n, 100))
		}
		return nil
	},
	hint: "export it from Jamf Pro: GET /api/v1/computers-inventory?section=GENERAL&section=HARDWARE&section=USER_AND_LOCATION&section=OPERATING_SYSTEM, or an advanced computer search exported as CSV",
}

var intuneFormat = mdmFormat{
	source: SourceIntune, title: "Intune", what: "managedDevice",
	columns: []mdmColumn{
		{"name", []string{"Device name"}},
		{"serial", []string{"Serial number"}},
		{"sourceId", []string{"Device ID"}},
		{"osName", []string{"OS"}},
		{"osVersion", []string{"OS version"}},
		{"owner", []string{"Primary user UPN", "Primary user email address"}},
	},
	required: []string{"name", "serial"},
	listKey:  "value",
	fromJSON: intuneDevice,
	complete: func(top map[string]json.RawMessage, n int) error {
		if raw, ok := top["@odata.nextLink"]; ok && string(raw) != "null" {
			return errors.New("the file is one page of the list (it has @odata.nextLink): follow the next links to the end and join the value arrays into one")
		}
		return nil
	},
	hint: "export it from the Intune admin center (Devices > All devices > Export, CSV) or from Microsoft Graph: GET /deviceManagement/managedDevices",
}

// parseMDM reads an MDM export: JSON when its first non-blank byte is '{'
// or '[', else CSV with a header line.
func parseMDM(file string, r io.Reader, f *mdmFormat, opts ImportOptions) ([]mdmRow, error) {
	fail := func(line int, format string, args ...any) error {
		return &Error{Kind: ErrInvalid, File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	br, lr, first, err := openImport(r, opts, " \t\r\n")
	if err != nil {
		return nil, readErr(file, opts, err)
	}
	if b, _ := br.Peek(3); string(b) == "\ufeff" {
		br.Discard(3)
		if b, _ := br.Peek(64 << 10); len(bytes.TrimLeft(b, " \t\r\n")) > 0 {
			first = bytes.TrimLeft(b, " \t\r\n")[0]
		} else {
			first = 0
		}
	}
	if first == 0 {
		return nil, fail(0, "empty %s export", f.title)
	}
	var rows []mdmRow
	if first == '{' || first == '[' {
		rows, err = parseMDMJSON(br, lr, f, fail, opts)
	} else {
		rows, err = parseMDMCSV(br, f, fail, opts)
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			if e.File == "" {
				e.File = file
			}
			return nil, err
		}
		return nil, readErr(file, opts, err)
	}
	if len(rows) == 0 {
		return nil, fail(0, "no %s in the %s export", f.what, f.title)
	}
	for _, r := range rows {
		if r.name == "" {
			return nil, &Error{Kind: ErrInvalid, File: file, Line: r.line, Field: r.label["name"], Msg: "empty: every device needs a name"}
		}
		if r.serial == "" && r.assetTag == "" {
			return nil, &Error{Kind: ErrInvalid, File: file, Line: r.line, Field: r.label["serial"],
				Msg: fmt.Sprintf("empty: devid matches the devices of an MDM export to its own by serial number (or asset tag); %q has neither", r.name)}
		}
	}
	return rows, nil
}

func parseMDMCSV(br io.Reader, f *mdmFormat, fail func(int, string, ...any) error, opts ImportOptions) ([]mdmRow, error) {
	r := csv.NewReader(br)
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		return nil, csvError(err, fail)
	}
	hline, _ := r.FieldPos(0)
	// field → the column index and header of each header that gives it,
	// in order of preference.
	type col struct {
		i     int
		label string
	}
	cols := map[string][]col{}
	seen := map[string]int{}
	for _, c := range f.columns {
		for _, want := range c.headers {
			for i, h := range header {
				if !strings.EqualFold(strings.TrimSpace(h), want) {
					continue
				}
				if prev, dup := seen[strings.ToLower(want)]; dup && prev != i {
					return nil, fail(hline, "column %q appears twice", want)
				}
				seen[strings.ToLower(want)] = i
				cols[c.field] = append(cols[c.field], col{i, strings.TrimSpace(h)})
			}
		}
	}
	for _, req := range f.required {
		if len(cols[req]) == 0 {
			var names []string
			for _, c := range f.columns {
				if c.field == req {
					names = c.headers
				}
			}
			msg := fmt.Sprintf("missing column %q: not a %s export (%s)", names[0], f.title, f.hint)
			if other := otherFormat(f, header); other != "" {
				msg += "; it looks like " + other + "'s"
			}
			return nil, fail(hline, "%s", msg)
		}
	}
	var rows []mdmRow
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
		m := mdmRow{line: line, label: map[string]string{}}
		get := func(field string) (string, string) {
			for _, c := range cols[field] {
				if v := strings.TrimSpace(rec[c.i]); v != "" {
					return v, c.label
				}
			}
			if cs := cols[field]; len(cs) > 0 {
				return "", cs[0].label
			}
			return "", ""
		}
		m.name, m.label["name"] = get("name")
		m.serial, m.label["serial"] = get("serial")
		m.assetTag, m.label["assetTag"] = get("assetTag")
		m.sourceID, m.label["sourceId"] = get("sourceId")
		osName, osLabel := get("osName")
		osVersion, verLabel := get("osVersion")
		m.os, m.label["os"] = joinOS(osName, osVersion), firstNonEmpty(osLabel, verLabel)
		for _, c := range cols["owner"] {
			if v := strings.TrimSpace(rec[c.i]); v != "" {
				m.owners = append(m.owners, mdmValue{c.label, v})
			}
		}
		if f.source == SourceJamf {
			m.owners = jamfOwners(m.owners)
		}
		rows = append(rows, m)
	}
	return rows, nil
}

// otherFormat names the other MDM when header is its export's.
func otherFormat(f *mdmFormat, header []string) string {
	for _, o := range []*mdmFormat{&jamfFormat, &intuneFormat} {
		if o == f {
			continue
		}
		n := 0
		for _, req := range o.required {
			for _, c := range o.columns {
				if c.field != req {
					continue
				}
				for _, h := range header {
					if strings.EqualFold(strings.TrimSpace(h), c.headers[0]) {
						n++
						break
					}
				}
			}
		}
		if n == len(o.required) {
			return o.title + " (--format " + o.source + ")"
		}
	}
	return ""
}

// jamfOwners keeps Jamf's username only when it is an email (a UPN, with
// Jamf Connect or an IdP): a short login name is no devid user.
func jamfOwners(vs []mdmValue) []mdmValue {
	var out []mdmValue
	for _, v := range vs {
		if strings.EqualFold(v.label, "Username") || v.label == "userAndLocation.username" {
			if !strings.Contains(v.value, "@") {
				continue
			}
		}
		out = append(out, v)
	}
	return out
}

func joinOS(name, version string) string {
	switch {
	case name == "":
		return version
	case version == "" || strings.Contains(name, version):
		return name
	}
	return name + " " + version
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// parseMDMJSON reads the JSON of an MDM's API: an object with the array of
// devices under f.listKey, or the array itself.
func parseMDMJSON(br io.Reader, lr *lineReader, f *mdmFormat, fail func(int, string, ...any) error, opts ImportOptions) ([]mdmRow, error) {
	lineAt := lr.lineAt
	dec := json.NewDecoder(br)
	jsonErr := func(err error, off int64) error {
		if errors.Is(err, errTooLarge) {
			return err
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fail(lineAt(lr.n), "unexpected end of the JSON")
		}
		return fail(lineAt(off), "%v", err)
	}
	var rows []mdmRow
	readArray := func() error {
		for dec.More() {
			off := dec.InputOffset()
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return jsonErr(err, off)
			}
			line := lineAt(dec.InputOffset() - int64(len(raw)))
			if len(rows) == opts.maxRows() {
				return tooManyRows("", line, opts)
			}
			if len(raw) == 0 || raw[0] != '{' {
				return fail(line, "a %s is a JSON object, not %s", f.what, jsonKind(raw))
			}
			m, err := f.fromJSON(line, raw)
			if err != nil {
				return fail(line, "%v", err)
			}
			rows = append(rows, m)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return jsonErr(err, dec.InputOffset())
		}
		return nil
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonErr(err, 0)
	}
	switch tok {
	case json.Delim('['):
		if err := readArray(); err != nil {
			return nil, err
		}
	case json.Delim('{'):
		top := map[string]json.RawMessage{}
		found := false
		for dec.More() {
			off := dec.InputOffset()
			kt, err := dec.Token()
			if err != nil {
				return nil, jsonErr(err, off)
			}
			key, _ := kt.(string)
			if _, dup := top[key]; dup || key == f.listKey && found {
				return nil, fail(lineAt(off), "key %q appears twice", key)
			}
			if key == f.listKey {
				found = true
				top[key] = nil
				t, err := dec.Token()
				if err != nil {
					return nil, jsonErr(err, dec.InputOffset())
				}
				if t != json.Delim('[') {
					return nil, fail(lineAt(off), "%q: want an array of %s objects", key, f.what)
				}
				if err := readArray(); err != nil {
					return nil, err
				}
				continue
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, jsonErr(err, dec.InputOffset())
			}
			top[key] = raw
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, jsonErr(err, dec.InputOffset())
		}
		if !found {
			return nil, fail(1, "no %q array of %s objects: not the JSON of %s's API (%s)", f.listKey, f.what, f.title, f.hint)
		}
		if err := f.complete(top, len(rows)); err != nil {
			return nil, fail(1, "%v", err)
		}
	default:
		return nil, fail(1, "want a JSON object or array")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail(lineAt(dec.InputOffset()), "trailing data after the JSON")
	}
	return rows, nil
}

func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// jsonID is an ID given as a JSON string or number (Jamf's are strings of
// digits, some tools write numbers).
type jsonID string

func (id *jsonID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*id = jsonID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("want a string or a number")
	}
	*id = jsonID(n.String())
	return nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return strings.TrimSpace(*p)
}

// jamfComputer reads one computer of GET /api/v1/computers-inventory.
// Sections the request did not ask for are absent: GENERAL and HARDWARE
// are required.
func jamfComputer(line int, raw json.RawMessage) (mdmRow, error) {
	var c struct {
		ID      *jsonID `json:"id"`
		UDID    *string `json:"udid"`
		General *struct {
			Name     *string `json:"name"`
			AssetTag *string `json:"assetTag"`
		} `json:"general"`
		Hardware *struct {
			SerialNumber *string `json:"serialNumber"`
		} `json:"hardware"`
		UserAndLocation *struct {
			Username *string `json:"username"`
			Email    *string `json:"email"`
		} `json:"userAndLocation"`
		OperatingSystem *struct {
			Name    *string `json:"name"`
			Version *string `json:"version"`
		} `json:"operatingSystem"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return mdmRow{}, fmt.Errorf("computer: %v", err)
	}
	if c.General == nil || c.General.Name == nil {
		return mdmRow{}, errors.New("general.name: missing (ask for the GENERAL section: ?section=GENERAL&section=HARDWARE&section=USER_AND_LOCATION&section=OPERATING_SYSTEM)")
	}
	if c.Hardware == nil || c.Hardware.SerialNumber == nil {
		return mdmRow{}, errors.New("hardware.serialNumber: missing (ask for the HARDWARE section: ?section=GENERAL&section=HARDWARE&section=USER_AND_LOCATION&section=OPERATING_SYSTEM)")
	}
	m := mdmRow{line: line, name: str(c.General.Name), serial: str(c.Hardware.SerialNumber), assetTag: str(c.General.AssetTag),
		label: map[string]string{"name": "general.name", "serial": "hardware.serialNumber", "assetTag": "general.assetTag", "os": "operatingSystem", "sourceId": "id"}}
	switch {
	case c.ID != nil && strings.TrimSpace(string(*c.ID)) != "":
		m.sourceID = strings.TrimSpace(string(*c.ID))
	case str(c.UDID) != "":
		m.sourceID, m.label["sourceId"] = str(c.UDID), "udid"
	}
	if o := c.OperatingSystem; o != nil {
		m.os = joinOS(str(o.Name), str(o.Version))
	}
	if u := c.UserAndLocation; u != nil {
		for _, v := range []mdmValue{{"userAndLocation.email", str(u.Email)}, {"userAndLocation.username", str(u.Username)}} {
			if v.value != "" {
				m.owners = append(m.owners, v)
			}
		}
		m.owners = jamfOwners(m.owners)
	}
	return m, nil
}

// intuneDevice reads one managedDevice of Microsoft Graph.
func intuneDevice(line int, raw json.RawMessage) (mdmRow, error) {
	var d struct {
		ID                *string `json:"id"`
		DeviceName        *string `json:"deviceName"`
		SerialNumber      *string `json:"serialNumber"`
		UserPrincipalName *string `json:"userPrincipalName"`
		EmailAddress      *string `json:"emailAddress"`
		OperatingSystem   *string `json:"operatingSystem"`
		OSVersion         *string `json:"osVersion"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return mdmRow{}, fmt.Errorf("managedDevice: %v", err)
	}
	if d.DeviceName == nil {
		return mdmRow{}, errors.New("deviceName: missing (leave it in $select)")
	}
	if d.SerialNumber == nil {
		return mdmRow{}, errors.New("serialNumber: missing (leave it in $select)")
	}
	m := mdmRow{line: line, name: str(d.DeviceName), serial: str(d.SerialNumber), sourceID: str(d.ID),
		os:    joinOS(str(d.OperatingSystem), str(d.OSVersion)),
		label: map[string]string{"name": "deviceName", "serial": "serialNumber", "assetTag": "serialNumber", "os": "operatingSystem", "sourceId": "id"}}
	for _, v := range []mdmValue{{"userPrincipalName", str(d.UserPrincipalName)}, {"emailAddress", str(d.EmailAddress)}} {
		if v.value != "" {
			m.owners = append(m.owners, v)
		}
	}
	return m, nil
}

// normaliseName turns an MDM's device name into a devid name: lower case,
// every run of characters other than a-z, 0-9, '.' and '_' one '-', no
// '-', '.' or '_' at either end, at most 253 bytes. "" if nothing is left.
func normaliseName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	out := strings.TrimLeft(b.String(), "-._")
	if len(out) > 253 {
		out = out[:253]
	}
	return strings.TrimRight(out, "-._")
}
