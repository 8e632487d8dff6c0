package adminapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Serial is an SSH certificate serial number. In JSON it is a string of
// decimal digits: serials use all 64 bits, and a JSON number above 2^53
// loses precision in many readers (jq 1.6 prints 10071804687342786553 as
// 10071804687342787000). Decoding also takes a JSON number, for requests
// written before serials were strings.
type Serial uint64

func (s Serial) String() string { return strconv.FormatUint(uint64(s), 10) }

// MarshalJSON encodes s as a JSON string of decimal digits.
func (s Serial) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, s.String()), nil
}

// UnmarshalJSON takes a string of decimal digits, or a JSON number that is
// an integer from 0 to 2^64-1, with no sign, exponent, fraction or leading
// zero. null leaves s unchanged, as for other JSON types.
func (s *Serial) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	txt := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &txt); err != nil {
			return fmt.Errorf("serial: %w", err)
		}
	}
	n, err := ParseSerial(txt)
	if err != nil {
		return err
	}
	*s = n
	return nil
}

// ParseSerial parses a serial written in decimal, as `devid cert revoke`
// and the admin API take it.
func ParseSerial(txt string) (Serial, error) {
	n, err := strconv.ParseUint(txt, 10, 64)
	if err != nil || len(txt) > 1 && txt[0] == '0' {
		return 0, fmt.Errorf("serial: %q is not a serial (want decimal digits, 0 to 18446744073709551615, no leading zeros)", txt)
	}
	return Serial(n), nil
}
