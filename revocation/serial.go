package revocation

import "github.com/devid-ssh/devid/adminapi"

// Serial is an SSH certificate serial number, written in JSON as a string
// of decimal digits. It is the admin API's type (adminapi.Serial): a
// revocation record is stored as the admin API shows it (the "after" of a
// cert.revoke audit entry), so the two share one encoding.
type Serial = adminapi.Serial
