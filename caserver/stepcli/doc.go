// Package stepcli tests devid-ca against Smallstep's own `step` CLI, the
// version go.mod pins as a tool (github.com/smallstep/cli/cmd/step), built
// once per test binary (package gobuild; about 4 minutes with an empty
// build cache, seconds with a warm one):
//
//   - `step ca bootstrap` pins devid-ca by the fingerprint `devid-ca init`
//     prints, and refuses a wrong one;
//   - `step ssh config --roots` and `--host --roots` print the SSH CA keys
//     devid-ca serves on /ssh/roots;
//   - `step ssh config --set User=LOGIN` renders step's client
//     configuration with that login (without it step would take a devid
//     user certificate's first principal, the device ID);
//   - `step ca certificate DEVICE-ID CRT --attestation-uri
//     'tpmkms:name=KEY;device=SOCKET'` gets a device certificate through
//     ACME device-attest-01 with step's own TPM code, against a swtpm that
//     devid's inventory knows by its EK; the certificate chains to
//     devid's root, names the device, is for the TPM key step made, and
//     authorises an SSH host certificate for that key; `step ssh
//     check-host` then knows the host; a quarantined device is refused;
//   - `step ssh renew` finds no SSHPOP provisioner: hosts renew by
//     attesting again.
//
// It holds tests only. Without swtpm the attestation test skips, and fails
// when CI=true.
package stepcli
