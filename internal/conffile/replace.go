package conffile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// ReplaceTopLevel returns the JSON object data with the value of its
// top-level key replaced by v (indented as the key's line is), everything
// else byte for byte as it was: for rewriting one member of a config
// file without reordering or reformatting the rest. An object that has
// key twice, or not at all, is an error.
func ReplaceTopLevel(data []byte, key string, v any) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	start, end := -1, -1
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keyEnd := int(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if t != key {
			continue
		}
		if start >= 0 {
			return nil, fmt.Errorf("%q twice at the top level", key)
		}
		end = int(dec.InputOffset())
		start = keyEnd + bytes.IndexFunc(data[keyEnd:], func(r rune) bool { return r != ' ' && r != '\t' && r != '\n' && r != '\r' && r != ':' })
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if start < 0 {
		return nil, fmt.Errorf("no %q at the top level", key)
	}
	line := data[bytes.LastIndexByte(data[:start], '\n')+1:]
	indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
	unit := "  "
	if bytes.Contains(indent, []byte("\t")) {
		unit = "\t"
	}
	nv, err := json.MarshalIndent(v, string(indent), unit)
	if err != nil {
		return nil, err
	}
	return slices.Concat(data[:start], nv, data[end:]), nil
}
