package adminapi

import "net/url"

// Off-boarding routes, under Prefix, for an admin client certificate:
//
//	POST   /devid/v1/users/{email}/status   UserStatusRequest → UserDevices
//	DELETE /devid/v1/users/{email}          ReasonRequest (optional) → UserDevices
//
// Disabling a user revokes, at once, every unexpired SSH user certificate
// of their devices and every one naming them (user:EMAIL, login:LOGIN),
// and no device of theirs gets a certificate until they are enabled again;
// enabling does not bring the revoked certificates back. Deleting a user
// revokes as disabling does, leaves their devices without an owner, and
// quarantines their active workstations. Disabling a disabled user (or
// enabling an enabled one) is 409; an unknown user 404.

// UserStatusRequest is the body of POST /devid/v1/users/{email}/status.
// Disabled is required: a body without it is 400, never an enable.
type UserStatusRequest struct {
	Disabled *bool  `json:"disabled"`
	Reason   string `json:"reason,omitempty"`
}

// ReasonRequest is the body of DELETE /devid/v1/users/{email}.
type ReasonRequest struct {
	Reason string `json:"reason,omitempty"`
}

// UserDevices is a user and the devices they own: the answer to a
// status change; for a delete, the user as they were and the devices they
// owned, as they are now (no owner; active workstations quarantined).
type UserDevices struct {
	User    *User     `json:"user"`
	Devices []*Device `json:"devices"`
}

// SetUserDisabled disables or enables a user.
func (c *Client) SetUserDisabled(email string, disabled bool, reason string) (*UserDevices, error) {
	var out UserDevices
	err := c.doJSON("POST", Prefix+"users/"+url.PathEscape(email)+"/status", UserStatusRequest{Disabled: &disabled, Reason: reason}, &out)
	return &out, err
}

// DeleteUser deletes a user.
func (c *Client) DeleteUser(email, reason string) (*UserDevices, error) {
	var out UserDevices
	err := c.doJSON("DELETE", Prefix+"users/"+url.PathEscape(email), ReasonRequest{Reason: reason}, &out)
	return &out, err
}

// UserDevices returns a user and the devices they own.
func (c *Client) UserDevices(email string) (*UserDevices, error) {
	u, err := c.User(email)
	if err != nil {
		return nil, err
	}
	devs, err := c.Devices(url.Values{"owner": {u.Email}})
	if err != nil {
		return nil, err
	}
	if devs == nil {
		devs = []*Device{}
	}
	return &UserDevices{User: u, Devices: devs}, nil
}
