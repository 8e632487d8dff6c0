package inventory

import (
	"net/mail"
	"regexp"
	"slices"
	"strings"

	"github.com/devid-ssh/devid/deviceid"
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
	ek         *deviceid.EK
	name       string
	kind       Kind
	collection string
	owner      string
	status     Status // "" when not given
}

func checkNewDevice(nd NewDevice) (*deviceFields, *Error) {
	var f deviceFields
	var err error
	if strings.TrimSpace(nd.EK) == "" {
		return nil, invalid("ek", "missing: give the EK public key or EK certificate (PEM, or base64 DER)")
	}
	if f.ek, err = deviceid.ParseEKText(nd.EK); err != nil {
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
	}
	return &f, nil
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
// Retired is final: a retired device's EK cannot be used again.
func allowedTransition(from, to Status) bool {
	switch from {
	case StatusActive:
		return to == StatusQuarantined || to == StatusRetired
	case StatusQuarantined:
		return to == StatusActive || to == StatusRetired
	}
	return false
}
