// Package depcheck holds a test that keeps step-ca's dependency tree out of
// the binaries that run on every host.
package depcheck
