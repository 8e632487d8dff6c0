package krl

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics and fails only with a *ParseError; what it
// accepts marshals, parses back to the same revocations, marshals to the
// same bytes again, and is never larger than the input (the encoding is
// minimal).
func FuzzParse(f *testing.F) {
	k, _, _ := richKRL(f)
	b, err := k.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, c := range malformed(f) {
		f.Add(c.b)
	}
	for _, c := range edgeValid(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := Parse(b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		k.Signatures = nil
		if out, _ := roundTrip(t, k); len(out) > len(b) {
			t.Fatalf("re-encoded %d bytes as %d", len(b), len(out))
		}
	})
}

// FuzzSpec: AddSpec never panics, and what it accepts marshals and parses
// back to the same revocations.
func FuzzSpec(f *testing.F) {
	ca := newSigner(f)
	for _, c := range specCases(f, ca) {
		f.Add(c.line + "\n" + c.line)
	}
	f.Add("serial: 1-0x10\nid: x\n# c\nserial: 077\n")
	f.Fuzz(func(t *testing.T, spec string) {
		k := new(KRL)
		if err := k.AddSpec(strings.NewReader(spec), SpecOptions{Name: "f", CA: ca.PublicKey()}); err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SpecError", err)
			}
			return
		}
		roundTrip(t, k)
	})
}
