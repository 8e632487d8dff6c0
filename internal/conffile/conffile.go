// Package conffile reads devid's JSON configuration files strictly: unknown
// fields, a wrong type, trailing data or an unsupported version are errors
// that name the file and line.
package conffile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// DecodeJSON decodes data (read from file) into v. Unknown fields are errors.
func DecodeJSON(file string, data []byte, v any) error {
	lineAt := func(off int64) int {
		off = min(max(off, 0), int64(len(data)))
		return 1 + bytes.Count(data[:off], []byte("\n"))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("%s:%d: %v", file, lineAt(se.Offset), err)
		case errors.As(err, &te):
			return fmt.Errorf("%s:%d: field %q: want %v, got JSON %s", file, lineAt(te.Offset), te.Field, te.Type, te.Value)
		case err == io.EOF:
			return fmt.Errorf("%s: empty file", file)
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		off := dec.InputOffset()
		// encoding/json reports an unknown field only once the whole value
		// is read: find the field's own line.
		if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
			if loc := regexp.MustCompile(regexp.QuoteMeta(name) + `\s*:`).FindIndex(data); loc != nil {
				off = int64(loc[0])
			}
		}
		return fmt.Errorf("%s:%d: %s", file, lineAt(off), msg)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s:%d: trailing data after the JSON object", file, lineAt(dec.InputOffset()))
	}
	return nil
}

// Load reads file and decodes it into v with DecodeJSON, then checks that
// version is the one this program understands.
func Load(file string, v interface{ ConfigVersion() int }, want int) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := DecodeJSON(file, data, v); err != nil {
		return err
	}
	if got := v.ConfigVersion(); got != want {
		return fmt.Errorf("%s: version %d is not supported (this program reads version %d)", file, got, want)
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string ("24h",
// "90m") in configuration files.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string; a bare number is an error, since
// its unit would be a guess.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"24h\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("duration %q must be positive", s)
	}
	d.Duration = v
	return nil
}
