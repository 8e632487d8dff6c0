// Package clitest is the harness of devid's command-line script tests
// (testscript): each command runs its scripts, cmd/NAME/testdata/script/*.txtar,
// against its real main, with a real CA serving on a loopback port and a
// swtpm where a script needs a TPM. Params gives the commands the scripts
// share (freeport, waitca, genek, fingerprint, stdout2env, subst,
// needtools, swtpm).
package clitest
