package inventory

import (
	"errors"
	"fmt"
)

// DeviceLookup finds a device by device ID or name, and a user (a
// device's owner) by email, as a *Store does.
type DeviceLookup interface {
	Device(ref string) (*Device, error)
	User(email string) (*User, error)
}

// ErrNotUsable is what every *NotUsableError matches with errors.Is.
var ErrNotUsable = errors.New("device may not have certificates")

// NotUsableError says why a device may not have certificates: it is not
// registered (Device nil), it is not active, or its owner may not have
// certificates (Owner set). Its text is meant for the device that asked:
// "device ID is not registered", "device NAME (ID) is quarantined",
// "device NAME (ID) is active, but its owner EMAIL is disabled".
type NotUsableError struct {
	ID     string
	Device *Device // nil: no device with this ID
	// Owner, when not "", is the device's owner, the reason an active
	// device may not: disabled (OwnerDisabled), or not a user at all.
	Owner         string
	OwnerDisabled bool
}

func (e *NotUsableError) Error() string {
	switch {
	case e.Device == nil:
		return fmt.Sprintf("device %s is not registered (on the machine, `devid tpm info` prints its EK and the `devid device add` line that registers it; a device registered as pending, by its serial number, binds its TPM with its enrolment token from `devid device token NAME`)", e.ID)
	case e.Owner != "" && e.OwnerDisabled:
		return fmt.Sprintf("device %s (%s) is active, but its owner %s is disabled", e.Device.Name, e.ID, e.Owner)
	case e.Owner != "":
		return fmt.Sprintf("device %s (%s) is active, but its owner %s is not a user", e.Device.Name, e.ID, e.Owner)
	}
	if e.Device.Pending() {
		return fmt.Sprintf("device %s is pending: no TPM is bound to it yet (its first attestation binds one, with a token from `devid device token %s`)", e.Device.Name, e.Device.Name)
	}
	return fmt.Sprintf("device %s (%s) is %s", e.Device.Name, e.ID, e.Device.Status)
}

// Unwrap lets errors.Is match ErrNotUsable.
func (e *NotUsableError) Unwrap() error { return ErrNotUsable }

// CheckUsable returns the device with ID id if it may have certificates
// now: it is registered and active, and, for a workstation, its owner, if
// it has one, is a user who is not disabled. This is the rule of every issuance,
// read from the inventory at each one: the Attestation CA's (package
// attestca) and step-ca's webhooks' (package issuance). A device that may
// not is a *NotUsableError; any other error is devs' own (the inventory
// could not be read).
func CheckUsable(devs DeviceLookup, id string) (*Device, error) {
	d, err := devs.Device(id)
	if errors.Is(err, ErrNotFound) {
		return nil, &NotUsableError{ID: id}
	}
	if err != nil {
		return nil, err
	}
	if d.Status != StatusActive {
		return nil, &NotUsableError{ID: id, Device: d}
	}
	if d.Owner == "" || d.Kind != KindWorkstation {
		// A host's owner is who looks after it, not who logs in with
		// its certificates: their leaving does not take the host down.
		return d, nil
	}
	u, err := devs.User(d.Owner)
	switch {
	case errors.Is(err, ErrNotFound):
		// The inventory keeps owners users (DeleteUser clears them): an
		// owner who is not is a record to fix, not a licence.
		return nil, &NotUsableError{ID: id, Device: d, Owner: d.Owner}
	case err != nil:
		return nil, err
	case u.Disabled:
		return nil, &NotUsableError{ID: id, Device: d, Owner: u.Email, OwnerDisabled: true}
	}
	return d, nil
}
