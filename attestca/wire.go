package attestca

import "github.com/devid-ssh/devid/attestca/wire"

// The wire types, as the CA names them (package wire defines them for both
// sides).
type (
	TPMInfo               = wire.TPMInfo
	AttestationParameters = wire.AttestationParameters
	AttestRequest         = wire.AttestRequest
	AttestResponse        = wire.AttestResponse
	SecretRequest         = wire.SecretRequest
	SecretResponse        = wire.SecretResponse
	Enrolment             = wire.Enrolment
)
