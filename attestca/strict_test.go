package attestca

import "testing"

// FuzzCheckAKEncoding: checkAKEncoding never panics, and once it accepts an
// AK public area and signature, any byte appended to either is refused.
// The seeds (testdata/fuzz) are a swtpm AK's, as is and with a byte
// appended.
func FuzzCheckAKEncoding(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, pub, sig []byte) {
		p := &AttestationParameters{Public: pub, CreateSignature: sig}
		if checkAKEncoding(p) != nil {
			return
		}
		for _, b := range []byte{0, 0x0a, 0xff} {
			if checkAKEncoding(&AttestationParameters{Public: append(append([]byte{}, pub...), b), CreateSignature: sig}) == nil {
				t.Fatalf("public area with 0x%02x appended: accepted", b)
			}
			if checkAKEncoding(&AttestationParameters{Public: pub, CreateSignature: append(append([]byte{}, sig...), b)}) == nil {
				t.Fatalf("signature with 0x%02x appended: accepted", b)
			}
		}
	})
}
