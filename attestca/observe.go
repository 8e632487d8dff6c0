package attestca

import (
	"errors"
	"strings"
)

// The kinds of refusal (Error.Reason), a small fixed set for metrics. A
// device that may not have certificates is refused with its
// inventory.NotUsableError's Reason (not_registered, pending, not_active,
// owner_disabled, owner_not_user).
const (
	// ReasonInvalid: a malformed or inconsistent request (ErrInvalid).
	ReasonInvalid = "invalid"
	// ReasonRefused: any other refusal (ErrRefused).
	ReasonRefused = "refused"
	// ReasonEKCertificate: no EK certificate, or one that does not chain
	// to a configured manufacturer root.
	ReasonEKCertificate = "ek_certificate"
	// ReasonSecret: a wrong, used or expired secret, or another device's.
	ReasonSecret = "secret"
	// ReasonToken: the inventory refused the enrolment token.
	ReasonToken = "token"
	// ReasonError: the CA failed (the store could not be read or written).
	ReasonError = "error"
)

// Steps of an attestation, as an Observer is told them.
const (
	StepAttest = "attest" // POST …/attest: the EK and AK checked, a challenge made
	StepSecret = "secret" // POST …/secret: the challenge answered, the AK certified
)

// Observer hears of the attestations the CA serves (Config.Observer), for
// metrics.
type Observer interface {
	// Certified: an attestation ended with an AK certificate.
	Certified()
	// Refused: a step was refused (or failed), for reason (a Reason
	// constant or an inventory.NotUsableError's Reason).
	Refused(step, reason string)
}

func withReason(reason string, e *Error) *Error {
	e.Reason = reason
	return e
}

// Reason is the kind of err, an error Attest or Secret returned, for
// metrics: its Reason, else ReasonInvalid or ReasonRefused by its Kind,
// else ReasonError.
func Reason(err error) string {
	var ae *Error
	switch {
	case !errors.As(err, &ae):
		return ReasonError
	case ae.Reason != "":
		return ae.Reason
	case errors.Is(ae, ErrInvalid):
		return ReasonInvalid
	}
	return ReasonRefused
}

// observe tells the observer how a request to path ended.
func (ca *CA) observe(path string, err error) {
	o := ca.cfg.Observer
	if o == nil {
		return
	}
	step := StepAttest
	if strings.HasSuffix(path, "/"+StepSecret) {
		step = StepSecret
	}
	switch {
	case err != nil:
		o.Refused(step, Reason(err))
	case step == StepSecret:
		o.Certified()
	}
}
