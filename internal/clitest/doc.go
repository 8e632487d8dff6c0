// Package clitest runs devid's command-line flows as scripts: the real
// devid and devid-ca mains, a real CA serving on a loopback port, and the
// scripts in testdata/script/*.txtar at the repository root.
package clitest
