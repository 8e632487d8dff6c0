package enroll

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/enroltoken"
)

// SetEnrolment makes every attestation of c present the one-time
// enrolment token src returns, if any (nil: none). A device registered
// without its EK needs one for its first attestation, which binds its TPM
// to it; after that the CA accepts the same token from the same TPM, and
// ignores it, so a device may keep presenting it. An error from src fails
// the attestation before the CA is asked.
func (c *Client) SetEnrolment(src func() (*wire.Enrolment, error)) { c.enrolment = src }

// TokenFile is an enrolment source for SetEnrolment: the token in file
// (package enroltoken's format, white space around it allowed), presented
// with the kind ("host" or "workstation") and name (may be empty) the
// device says it is. The file is read at each attestation: a missing file
// is no token (the device may remove it once enrolled), an unreadable or
// malformed one, or one others than its owner may read, an error naming
// the file.
func TokenFile(file, kind, name string) func() (*wire.Enrolment, error) {
	return func() (*wire.Enrolment, error) {
		tok, err := enroltoken.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("enroll: enrolment token file: %w", err)
		}
		return &wire.Enrolment{Token: tok.Text(), Kind: kind, Name: name}, nil
	}
}

// Token is an enrolment source for SetEnrolment: tok, with the kind and
// name the device says it is.
func Token(tok enroltoken.Token, kind, name string) func() (*wire.Enrolment, error) {
	return func() (*wire.Enrolment, error) {
		return &wire.Enrolment{Token: tok.Text(), Kind: kind, Name: name}, nil
	}
}
