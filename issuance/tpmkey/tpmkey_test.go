package tpmkey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/legacy/tpm2"
	"go.step.sm/crypto/jose"
)

// pubArea is an ECDSA P-256 TPMT_PUBLIC with attrs.
func pubArea(t testing.TB, attrs tpm2.KeyProp) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := tpm2.Public{Type: tpm2.AlgECC, NameAlg: tpm2.AlgSHA256, Attributes: attrs,
		ECCParameters: &tpm2.ECCParams{Sign: &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256}, CurveID: tpm2.CurveNISTP256,
			Point: tpm2.ECPoint{XRaw: pad(k.X), YRaw: pad(k.Y)}}}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pad(n *big.Int) []byte { return n.FillBytes(make([]byte, 32)) }

// goodAttrs are go-attestation's for the keys devid's devices make.
const goodAttrs = tpm2.FlagSignerDefault ^ tpm2.FlagRestricted

func payloadFor(t testing.TB, format string, pub []byte) []byte {
	t.Helper()
	att, err := cbor.Marshal(map[string]any{"fmt": format, "attStmt": map[string]any{"ver": "2.0", "alg": int64(-257), "pubArea": pub, "sig": []byte{1}, "certInfo": []byte{2}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"attObj": base64.RawURLEncoding.EncodeToString(att)})
	return b
}

// jws signs payload as an ACME client does (flattened JSON).
func jws(t testing.TB, payload []byte) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, new(jose.SignerOptions).WithHeader("url", "https://ca/acme/devid-tpm/challenge/a/b"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(obj.FullSerialize())
}

func TestCheckPublic(t *testing.T) {
	if err := CheckPublic(pubArea(t, goodAttrs)); err != nil {
		t.Fatalf("a key as devices make them: %v", err)
	}
	if err := CheckPublic(pubArea(t, goodAttrs|tpm2.FlagDecrypt)); err != nil {
		t.Fatalf("sign+decrypt: %v", err)
	}
	for _, c := range []struct {
		attrs tpm2.KeyProp
		want  string
	}{
		{goodAttrs &^ tpm2.FlagFixedTPM, "fixedTPM"},
		{goodAttrs &^ tpm2.FlagFixedParent, "fixedParent"},
		{goodAttrs &^ (tpm2.FlagFixedTPM | tpm2.FlagFixedParent), "fixedTPM (it could be duplicated out of the TPM), fixedParent"},
		{goodAttrs &^ tpm2.FlagSensitiveDataOrigin, "sensitiveDataOrigin"},
		{goodAttrs&^tpm2.FlagSign | tpm2.FlagDecrypt, "sign"},
		{goodAttrs | tpm2.FlagRestricted, "restricted"},
	} {
		err := CheckPublic(pubArea(t, c.attrs))
		if err == nil || !strings.HasPrefix(err.Error(), NotTPMResident) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("attributes %#x: %v, want a refusal naming %s", c.attrs, err, c.want)
		}
	}
	if err := CheckPublic([]byte{0, 1}); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Errorf("garbage: %v", err)
	}
}

func TestCheckPayload(t *testing.T) {
	for name, c := range map[string]struct {
		payload []byte
		isAtt   bool
		want    string // "" for accepted
	}{
		"good":          {payloadFor(t, "tpm", pubArea(t, goodAttrs)), true, ""},
		"not fixedTPM":  {payloadFor(t, "tpm", pubArea(t, goodAttrs&^tpm2.FlagFixedTPM)), true, "fixedTPM"},
		"apple":         {payloadFor(t, "apple", pubArea(t, goodAttrs)), true, `format "apple"`},
		"empty object":  {[]byte(`{}`), false, ""},
		"POST-as-GET":   {nil, false, ""},
		"no JSON":       {[]byte(`not json`), false, ""},
		"bad base64":    {[]byte(`{"attObj": "!!"}`), true, "base64url"},
		"bad CBOR":      {[]byte(`{"attObj": "` + base64.RawURLEncoding.EncodeToString([]byte{0xff, 0x00}) + `"}`), true, "CBOR"},
		"no pubArea":    {[]byte(`{"attObj": "` + b64CBOR(t, map[string]any{"fmt": "tpm", "attStmt": map[string]any{}}) + `"}`), true, "no pubArea"},
		"ATTOBJ folded": {bytes.Replace(payloadFor(t, "tpm", pubArea(t, goodAttrs&^tpm2.FlagFixedParent)), []byte("attObj"), []byte("ATTOBJ"), 1), true, "fixedParent"},
	} {
		isAtt, err := CheckPayload(c.payload)
		switch {
		case isAtt != c.isAtt:
			t.Errorf("%s: attestation %v, want %v", name, isAtt, c.isAtt)
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), NotTPMResident) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want a refusal with %q", name, err, c.want)
		}
	}
	// Duplicate CBOR map keys: step-ca's decoder keeps one of them, which
	// one is not promised; refused.
	dup := []byte{0xa2, 0x63, 'f', 'm', 't', 0x63, 't', 'p', 'm', 0x63, 'f', 'm', 't', 0x63, 't', 'p', 'm'}
	if _, err := CheckPayload([]byte(`{"attObj": "` + base64.RawURLEncoding.EncodeToString(dup) + `"}`)); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate keys: %v", err)
	}
}

func b64CBOR(t testing.TB, v any) string {
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestGuard: a refused attestation never reaches step-ca and is answered
// with an ACME problem; anything else reaches it with its body intact.
func TestGuard(t *testing.T) {
	var got []byte
	reached := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		got, _ = io.ReadAll(r.Body)
	})
	g := Guard(next, slog.New(slog.NewTextHandler(io.Discard, nil)))
	post := func(path string, body []byte) *httptest.ResponseRecorder {
		reached, got = false, nil
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, httptest.NewRequest("POST", path, bytes.NewReader(body)))
		return rec
	}
	bad := jws(t, payloadFor(t, "tpm", pubArea(t, goodAttrs&^tpm2.FlagFixedTPM)))
	rec := post("/acme/devid-tpm/challenge/a/b", bad)
	var p Problem
	if reached || rec.Code != 403 || rec.Header().Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type != ProblemType || !strings.HasPrefix(p.Detail, NotTPMResident+"the attested key lacks the TPM object attributes fixedTPM") {
		t.Fatalf("not fixedTPM: reached %v, %d %s", reached, rec.Code, rec.Body)
	}
	good := jws(t, payloadFor(t, "tpm", pubArea(t, goodAttrs)))
	for path, body := range map[string][]byte{
		"/acme/devid-tpm/challenge/a/b": good,
		"/acme/devid-tpm/new-account":   jws(t, []byte(`{"termsOfServiceAgreed": true}`)),
		"/acme/devid-tpm/authz/a":       jws(t, nil),
		"/1.0/sign":                     bad, // not ACME
		"/acme/devid-tpm/order/x":       []byte("not a JWS"),
	} {
		if rec := post(path, body); !reached || !bytes.Equal(got, body) {
			t.Errorf("%s: reached %v (%d %s), body intact %v", path, reached, rec.Code, rec.Body, bytes.Equal(got, body))
		}
	}
	if rec := post("/%61cme/devid-tpm/challenge/a/b", bad); reached || rec.Code != 403 {
		t.Errorf("escaped path: reached %v, %d", reached, rec.Code)
	}
}

// FuzzCheckJWS: never panics; a refusal always says "key is not
// TPM-resident"; a body that is not an attestation is never refused; and
// what it accepts, step-ca's decoder (default CBOR options) reads the same
// pubArea from.
func FuzzCheckJWS(f *testing.F) {
	f.Add(jws(f, payloadFor(f, "tpm", pubArea(f, goodAttrs))))
	f.Add(jws(f, payloadFor(f, "tpm", pubArea(f, goodAttrs&^tpm2.FlagFixedTPM))))
	f.Add(jws(f, []byte(`{"attObj": "oA"}`)))
	f.Add(jws(f, nil))
	f.Add(payloadFor(f, "tpm", pubArea(f, goodAttrs)))
	f.Add([]byte(`{"protected":"e30","payload":"e30","signature":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		isAtt, err := CheckJWS(body)
		if err != nil && !isAtt {
			t.Fatalf("refused a body that is no attestation: %v", err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), NotTPMResident) && !strings.HasPrefix(err.Error(), "tpmkey:") {
			t.Fatalf("refusal without the prefix: %v", err)
		}
		if !isAtt || err != nil {
			return
		}
		j, _ := jose.ParseJWS(string(body))
		var pl payload
		json.Unmarshal(j.UnsafePayloadWithoutVerification(), &pl)
		raw, _ := base64.RawURLEncoding.DecodeString(pl.AttObj)
		var att attestationObject
		if err := cbor.Unmarshal(raw, &att); err != nil {
			t.Fatalf("accepted what step-ca's decoder refuses: %v", err)
		}
		pub, _ := att.AttStatement["pubArea"].([]byte)
		if err := CheckPublic(pub); err != nil {
			t.Fatalf("step-ca's decoder reads another pubArea: %v", err)
		}
	})
}
