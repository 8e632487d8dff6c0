package inventory

// NotUsableReasons returns every value NotUsableError.Reason can take.
func NotUsableReasons() []string {
	return []string{"not_registered", "pending", "not_active", "owner_disabled", "owner_not_user"}
}

// Reason is why the device may not have certificates, as one of a small
// set of words (NotUsableReasons()), for metrics: not_registered, pending
// (no TPM bound yet), not_active (quarantined or retired), owner_disabled,
// owner_not_user.
func (e *NotUsableError) Reason() string {
	switch {
	case e.Device == nil:
		return "not_registered"
	case e.Owner != "" && e.OwnerDisabled:
		return "owner_disabled"
	case e.Owner != "":
		return "owner_not_user"
	case e.Device.Pending():
		return "pending"
	}
	return "not_active"
}
