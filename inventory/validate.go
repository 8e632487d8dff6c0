package inventory

import (
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/hostnames"
)

// Names, collections, logins and groups end up in SSH certificate principals
// and in the principals policy, where white space, commas and colons would be
// ambiguous: keep them to a conservative character set.
var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
	loginRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$`)
	groupRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$`)
)

// deviceFields is a NewDevice checked field by field.
type deviceFields struct {
	ek         *deviceid.EK // nil: a pending device
	name       string
	kind       Kind
	collection string
	owner      string
	status     Status // "" when not given
	hostNames  []string
	serial     string
	assetTag   string
	os         string
	source     string
	sourceID   string
}

// serialRE: serial numbers and asset tags as MDMs and vendors print them.
var serialRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$`)

// sourceRE: an MDM's name (jamf, intune) in Device.Source.
var sourceRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func checkNewDevice(nd NewDevice) (*deviceFields, *Error) {
	var f deviceFields
	var err error
	var ferr *Error
	if err := checkUTF8("ek", nd.EK); err != nil { // PEM: lines
		return nil, err
	}
	for _, t := range [][2]string{{"id", nd.ID}, {"name", nd.Name}, {"kind", nd.Kind},
		{"collection", nd.Collection}, {"owner", nd.Owner}, {"status", nd.Status},
		{"serial", nd.Serial}, {"assetTag", nd.AssetTag}, {"os", nd.OS}, {"source", nd.Source}, {"sourceId", nd.SourceID}} {
		if err := checkLine(t[0], t[1]); err != nil {
			return nil, err
		}
	}
	for _, t := range [][2]string{{"serial", nd.Serial}, {"assetTag", nd.AssetTag}} {
		if t[1] != "" && !serialRE.MatchString(t[1]) {
			return nil, invalid(t[0], "%q: want 1-128 characters of A-Z a-z 0-9 . _ : / + -, starting with a letter or digit", t[1])
		}
	}
	if len(nd.OS) > 128 || len(nd.SourceID) > 256 {
		return nil, invalid("os", "%d bytes (os) and %d bytes (sourceId): at most 128 and 256", len(nd.OS), len(nd.SourceID))
	}
	if nd.Source != "" && !sourceRE.MatchString(nd.Source) {
		return nil, invalid("source", "%q: want a lower-case name such as jamf or intune", nd.Source)
	}
	f.serial, f.assetTag, f.os, f.source, f.sourceID = nd.Serial, nd.AssetTag, nd.OS, nd.Source, nd.SourceID
	if strings.TrimSpace(nd.EK) == "" {
		if nd.ID != "" {
			return nil, invalid("ek", "missing: the row gives a device ID (%s) but no EK to check it against", nd.ID)
		}
		if nd.Serial == "" && nd.AssetTag == "" {
			return nil, invalid("ek", "missing: give the EK public key or EK certificate (PEM, or base64 DER), or a serial number or asset tag to register the device as pending until its first attestation")
		}
	} else if f.ek, err = deviceid.ParseEKText(nd.EK); err != nil {
		return nil, invalid("ek", "%s", strings.TrimPrefix(err.Error(), "deviceid: "))
	}
	if !nameRE.MatchString(nd.Name) {
		return nil, invalid("name", "%q: want 1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", nd.Name)
	}
	f.name = nd.Name
	if f.kind, err = ParseKind(nd.Kind); err != nil {
		return nil, invalid("kind", "%s", err)
	}
	if nd.Collection != "" && !nameRE.MatchString(nd.Collection) {
		return nil, invalid("collection", "%q: want 1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", nd.Collection)
	}
	f.collection = nd.Collection
	if nd.Owner != "" {
		var err *Error
		if f.owner, err = checkEmail(nd.Owner); err != nil {
			return nil, invalid("owner", "%s", err.Msg)
		}
	}
	if nd.Status != "" {
		if f.status, err = ParseStatus(nd.Status); err != nil {
			return nil, invalid("status", "%s", err)
		}
		if f.status == StatusPending && f.ek != nil {
			return nil, invalid("status", "pending is for a device registered without an EK; this one has one")
		}
	}
	if f.hostNames, ferr = checkHostNames(nd.HostNames); ferr != nil {
		return nil, ferr
	}
	return &f, nil
}

// checkNew checks what only a new device must meet: one registered
// without an EK is pending, whatever the row asked.
func (f *deviceFields) checkNew() *Error {
	if f.ek == nil && f.status != "" && f.status != StatusPending {
		return invalid("status", "%q: a device registered without an EK is pending until its first attestation binds its TPM", f.status)
	}
	return nil
}

// checkHostNames checks host name entries (package hostnames) and returns
// them without duplicates, in the order given; nil for none.
func checkHostNames(names []string) ([]string, *Error) {
	var out []string
	for _, n := range names {
		if err := checkLine("hostNames", n); err != nil {
			return nil, err
		}
		if _, err := hostnames.Parse(n); err != nil {
			return nil, invalid("hostNames", "%s", err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// checkCollectionName checks a collection's name.
func checkCollectionName(name string) *Error {
	if err := checkLine("collection", name); err != nil {
		return err
	}
	if !nameRE.MatchString(name) {
		return invalid("collection", "%q: want 1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", name)
	}
	return nil
}

// checkEmail checks a plain email address and returns it in its canonical
// form, lower case: devid treats emails as case-insensitive, as IdPs do, so
// Alice@Example.com and alice@example.com are one user.
func checkEmail(s string) (string, *Error) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", invalid("email", "%q is not a plain email address (user@domain)", s)
	}
	return foldEmail(s), nil
}

func foldEmail(s string) string { return strings.ToLower(s) }

// checkNewUser checks a user and returns it with groups sorted and
// deduplicated.
func checkNewUser(nu NewUser) (NewUser, *Error) {
	for _, t := range append([][2]string{{"email", nu.Email}, {"login", nu.Login}}, pairs("groups", nu.Groups)...) {
		if err := checkLine(t[0], t[1]); err != nil {
			return nu, err
		}
	}
	var err *Error
	if nu.Email, err = checkEmail(nu.Email); err != nil {
		return nu, err
	}
	if !loginRE.MatchString(nu.Login) {
		return nu, invalid("login", "%q: want 1-32 characters of A-Z a-z 0-9 . _ -, not starting with . or -", nu.Login)
	}
	groups := slices.Clone(nu.Groups)
	for _, g := range groups {
		if !groupRE.MatchString(g) {
			return nu, invalid("groups", "%q: want 1-128 characters of A-Z a-z 0-9 . _ @ + -, starting with a letter or digit", g)
		}
	}
	slices.Sort(groups)
	nu.Groups = slices.Compact(groups)
	if nu.Groups == nil {
		nu.Groups = []string{}
	}
	return nu, nil
}

// allowedTransition says whether a device may go from one status to another.
// Retired is final: a retired device's EK cannot be used again. A pending
// device only leaves pending by binding its TPM (BindEK), or by retirement.
func allowedTransition(from, to Status) bool {
	switch from {
	case StatusActive:
		return to == StatusQuarantined || to == StatusRetired
	case StatusQuarantined:
		return to == StatusActive || to == StatusRetired
	case StatusPending:
		// Binding its TPM (BindEK) makes a pending device active, not a
		// status change.
		return to == StatusRetired
	}
	return false
}

func pairs(field string, vs []string) [][2]string {
	out := make([][2]string, len(vs))
	for i, v := range vs {
		out[i] = [2]string{field, v}
	}
	return out
}

// MaxReasonLen is the longest reason, in bytes, a status change or audit
// entry takes: room for a sentence and a ticket URL, not for a file.
const MaxReasonLen = 1024

// CheckReason checks the reason given for a status change or revocation:
// at most MaxReasonLen bytes of one line of text (see checkLine). The error
// is an *Error about the field "reason", ErrInvalid.
func CheckReason(reason string) error {
	if len(reason) > MaxReasonLen {
		return invalid("reason", "%d bytes long; at most %d", len(reason), MaxReasonLen)
	}
	if err := checkLine("reason", reason); err != nil {
		return err
	}
	return nil
}

// checkUTF8 refuses text that is not valid UTF-8, or that holds U+FFFD, the
// mark a decoder (encoding/json's among them) leaves where it met invalid
// UTF-8: the sender's text was damaged, and storing what is left would
// record something nobody gave. The value is not echoed: it may be long.
func checkUTF8(field, s string) *Error {
	if !utf8.ValidString(s) {
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				return invalid(field, "not valid UTF-8 (byte %d)", i)
			}
			i += n
		}
	}
	if i := strings.IndexRune(s, utf8.RuneError); i >= 0 {
		return invalid(field, "not valid UTF-8 (U+FFFD, the mark of a bad conversion, at byte %d)", i)
	}
	return nil
}

// checkLine is checkUTF8 for one line of text that is printed as it is
// (devid audit, device show): no control characters (C0, DEL, C1: a newline
// or an escape sequence would forge output), line or paragraph separators,
// or bidirectional formatting characters (which reorder what a terminal
// shows).
func checkLine(field, s string) *Error {
	if err := checkUTF8(field, s); err != nil {
		return err
	}
	for i, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Bidi_Control) {
			return invalid(field, "control character %U at byte %d: want one line of plain text", r, i)
		}
	}
	return nil
}
