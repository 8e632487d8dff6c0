package conffile

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzReplaceTopLevel: for any JSON object, ReplaceTopLevel either fails
// or returns a JSON object whose "db" is the new one and whose other
// top-level members are as they were.
func FuzzReplaceTopLevel(f *testing.F) {
	f.Add([]byte(`{"version": 1, "db": {"type": "bbolt", "dataSource": "db/devid.db"}, "address": ":8443"}`))
	f.Add([]byte("{\n\t\"db\":\n\t\t{\"type\":\"bbolt\"}\n}"))
	f.Add([]byte(`{"a": {"db": 1}, "db": [1, 2], "z": "db"}`))
	f.Add([]byte(`{"nodb": 1}`))
	f.Add([]byte(`[1]`))
	type dbConfig struct {
		Type       string `json:"type"`
		DataSource string `json:"dataSource"`
	}
	want := dbConfig{Type: "postgresql", DataSource: "host=/x dbname='a\"b'"}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ReplaceTopLevel(data, "db", want)
		if err != nil {
			return
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(data, &before) != nil {
			return // replaceTopLevel only splices; a malformed input may pass through
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out)
		}
		var got dbConfig
		if err := json.Unmarshal(after["db"], &got); err != nil || got != want {
			t.Fatalf("db is %s (%v), want %+v", after["db"], err, want)
		}
		for k, v := range before {
			if k == "db" {
				continue
			}
			var a, b any
			json.Unmarshal(v, &a)
			json.Unmarshal(after[k], &b)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s changed: %s → %s", k, v, after[k])
			}
		}
	})
}
