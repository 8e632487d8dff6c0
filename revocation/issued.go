package revocation

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// IssuedCert is an SSH certificate step-ca issued, as `devid device show`
// lists what a device holds.
type IssuedCert struct {
	Serial      Serial    `json:"serial"` // a string in JSON
	Type        string    `json:"type"`   // host or user
	KeyID       string    `json:"keyId"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"validAfter"`
	ValidBefore time.Time `json:"validBefore"`
	// RevokedAt is when it was revoked by serial; zero if it was not (it
	// may still be revoked by its key ID, with its device).
	RevokedAt time.Time `json:"revokedAt,omitzero"`
}

// IssuedTo lists the SSH certificates with key ID keyID (a device ID) that
// have not expired, oldest first (by start, then serial).
func (s *Store) IssuedTo(keyID string) ([]*IssuedCert, error) {
	now := s.cfg.Now()
	certs, err := s.issued()
	if err != nil {
		return nil, err
	}
	out := []*IssuedCert{}
	for _, c := range certs {
		if c.KeyId != keyID || c.ValidBefore != ssh.CertTimeInfinity && c.ValidBefore <= uint64(now.Unix()) {
			continue
		}
		ic := &IssuedCert{Serial: Serial(c.Serial), Type: certType(c), KeyID: c.KeyId, Principals: c.ValidPrincipals,
			ValidAfter: certTime(c.ValidAfter), ValidBefore: certTime(c.ValidBefore)}
		if ic.Principals == nil {
			ic.Principals = []string{}
		}
		rc, err := s.revoked([]byte(ic.Type + ":" + strconv.FormatUint(c.Serial, 10)))
		if err != nil {
			return nil, err
		}
		if rc != nil {
			ic.RevokedAt = rc.RevokedAt
		}
		out = append(out, ic)
	}
	slices.SortFunc(out, func(a, b *IssuedCert) int {
		if c := a.ValidAfter.Compare(b.ValidAfter); c != 0 {
			return c
		}
		return cmp.Compare(a.Serial, b.Serial)
	})
	return out, nil
}

func certTime(t uint64) time.Time {
	if t > 1<<62 {
		t = 1 << 62
	}
	return time.Unix(int64(t), 0).UTC()
}
