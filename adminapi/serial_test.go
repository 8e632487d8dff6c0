package adminapi_test

import (
	"encoding/json"
	"math"
	"strconv"
	"testing"

	"github.com/devid-ssh/devid/adminapi"
)

func TestSerialJSON(t *testing.T) {
	for in, want := range map[string]uint64{
		`"10071804687342786553"`: 10071804687342786553,
		`10071804687342786553`:   10071804687342786553,
		`"18446744073709551615"`: math.MaxUint64,
		`"\u0031\u0032"`:         12,
		`0`:                      0,
		`"7"`:                    7,
	} {
		var s adminapi.Serial
		if err := json.Unmarshal([]byte(in), &s); err != nil || uint64(s) != want {
			t.Errorf("%s: %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{`"18446744073709551616"`, `"-1"`, `-1`, `1e3`, `1.5`, `"1.0"`, `""`, `" 1"`, `"+1"`, `"0x10"`, `"007"`, `true`, `[]`, `{}`} {
		var s adminapi.Serial
		if err := json.Unmarshal([]byte(in), &s); err == nil {
			t.Errorf("%s: decoded as %d, want an error", in, s)
		}
	}
	b, _ := json.Marshal(struct{ S adminapi.Serial }{10071804687342786553})
	if string(b) != `{"S":"10071804687342786553"}` {
		t.Errorf("marshal: %s", b)
	}
}

// FuzzSerialJSON: what decodes encodes as a string of decimal digits that
// decodes to the same serial.
func FuzzSerialJSON(f *testing.F) {
	for _, s := range []string{`"10071804687342786553"`, `10071804687342786553`, `"18446744073709551616"`, `"007"`, `1e3`, `"\u0031"`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var s adminapi.Serial
		if err := json.Unmarshal(in, &s); err != nil {
			return
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != strconv.Quote(strconv.FormatUint(uint64(s), 10)) {
			t.Fatalf("%q encodes as %s", in, out)
		}
		var back adminapi.Serial
		if err := json.Unmarshal(out, &back); err != nil || back != s {
			t.Fatalf("%s decodes as %d, %v; want %d", out, back, err, s)
		}
	})
}
