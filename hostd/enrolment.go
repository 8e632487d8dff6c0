package hostd

import (
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/devid-ssh/devid/enroll"
)

// EnrolmentConfig is how a device registered without its EK (pending)
// binds its TPM at its first attestation: the one-time enrolment token an
// operator made with `devid device token NAME`. devid-hostd and
// devid-agent read it from their configuration's "enrolment" object:
//
//	"enrolment": {"tokenFile": "/etc/devid/enrolment-token", "name": "web-1"}
//
// The token file is read at every attestation: until it exists the device
// attests without a token, and once the device is bound the token is
// accepted again from the same TPM and changes nothing, so the file may
// stay or go. Keep it readable by the daemon only (mode 0600): it is a
// secret until it has been used.
type EnrolmentConfig struct {
	// TokenFile holds the token (devid-enrol-…), an absolute path.
	TokenFile string `json:"tokenFile,omitempty"`
	// Name, if set, is the device's name in the inventory: the CA refuses
	// a token issued for another device. The kind (host for devid-hostd,
	// workstation for devid-agent) is always checked.
	Name string `json:"name,omitempty"`
}

var enrolmentNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// Check checks the configuration.
func (e EnrolmentConfig) Check() error {
	if e.TokenFile == "" {
		if e.Name != "" {
			return fmt.Errorf("enrolment.name %q without enrolment.tokenFile: the name is only what the device claims with a token", e.Name)
		}
		return nil
	}
	if !filepath.IsAbs(e.TokenFile) {
		return fmt.Errorf("enrolment.tokenFile %q: want an absolute path", e.TokenFile)
	}
	if e.Name != "" && !enrolmentNameRE.MatchString(e.Name) {
		return fmt.Errorf("enrolment.name %q: not a device name (letters, digits, . _ -)", e.Name)
	}
	return nil
}

// Apply makes c present the token, if one is configured, claiming kind
// ("host" or "workstation"); it returns c.
func (e EnrolmentConfig) Apply(c *enroll.Client, kind string) *enroll.Client {
	if e.TokenFile != "" {
		c.SetEnrolment(enroll.TokenFile(e.TokenFile, kind, e.Name))
	}
	return c
}
