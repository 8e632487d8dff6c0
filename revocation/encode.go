package revocation

import (
	"slices"
	"time"

	"github.com/devid-ssh/devid/krl"
	"golang.org/x/crypto/ssh"
)

// encode builds the KRL: one certificate section per CA key, each with the
// revoked key IDs (a device's host and user certificates alike; the user
// CA's also those of disabled users' devices) and that CA's revoked
// serials.
func encode(r *Revocations, version uint64, generated time.Time, hostCA, userCA ssh.PublicKey) ([]byte, error) {
	k := &krl.KRL{Version: version, Generated: generated.UTC().Truncate(time.Second), Comment: "devid-ca"}
	for _, sec := range []struct {
		ca      ssh.PublicKey
		keyIDs  []string
		serials []uint64
	}{{hostCA, r.KeyIDs, r.Host}, {userCA, slices.Sorted(slices.Values(append(slices.Clone(r.KeyIDs), r.UserKeyIDs...))), r.User}} {
		if len(sec.keyIDs) == 0 && len(sec.serials) == 0 {
			continue
		}
		cs := k.CertsFor(sec.ca)
		cs.KeyIDs = append(cs.KeyIDs, sec.keyIDs...)
		for _, n := range sec.serials {
			if err := cs.Serials.Add(n, n); err != nil {
				return nil, err
			}
		}
	}
	return k.Marshal()
}
