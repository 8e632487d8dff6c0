package buildinfo

import (
	"bytes"
	"encoding/json"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	stamped := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"},
		}}, true
	}
	plain := func() (*debug.BuildInfo, bool) { return &debug.BuildInfo{Main: debug.Module{Version: "v0.13.0"}}, true }
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, c := range []struct {
		name, version, revision string
		read                    func() (*debug.BuildInfo, bool)
		want                    Info
	}{
		{"linker", "0.13.0+5.gabc1234", "abc1234", none, Info{"p", "0.13.0+5.gabc1234", "abc1234", runtime.Version()}},
		{"linker wins", "0.13.0", "abc", stamped, Info{"p", "0.13.0", "abc", runtime.Version()}},
		{"vcs stamp", "", "", stamped, Info{"p", "(devel)", "0123456789abcdef0123456789abcdef01234567-dirty", runtime.Version()}},
		{"version only", "0.13.0", "", stamped, Info{"p", "0.13.0", "0123456789abcdef0123456789abcdef01234567-dirty", runtime.Version()}},
		{"go install", "", "", plain, Info{"p", "v0.13.0", "", runtime.Version()}},
		{"nothing", "", "", none, Info{"p", "(unknown)", "", runtime.Version()}},
	} {
		if got := get("p", c.version, c.revision, c.read); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	if err := Print(&b, "devid-hostd"); err != nil {
		t.Fatal(err)
	}
	want := Get("devid-hostd").String() + "\n"
	if b.String() != want {
		t.Errorf("text: %q, want %q", b.String(), want)
	}
	if i := (Info{"devid-hostd", "0.13.0+5.gabc", "", "go1.26.8"}); i.String() != "devid-hostd 0.13.0+5.gabc (go1.26.8)" {
		t.Errorf("String: %q", i.String())
	}
	b.Reset()
	if err := PrintJSON(&b, "devid"); err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v: %q", err, b.String())
	}
	if got["program"] != "devid" || got["version"] == "" || got["goVersion"] != runtime.Version() || len(got) != 4 {
		t.Errorf("json: %q", b.String())
	}
}

// TestJSON: the hand-made JSON is what encoding/json reads back, whatever
// the strings hold.
func TestJSON(t *testing.T) {
	for _, s := range []string{"", "0.13.0+5.gabc", `q"b\\s`, "ctl\x00\x1f\n\t", "é…\u2028\u2029", "bad\xff\xfe", "<&>"} {
		in := Info{Program: s, Version: s + "v", Revision: "r" + s, GoVersion: s}
		var out Info
		if err := json.Unmarshal([]byte(in.json()), &out); err != nil {
			t.Errorf("%q: %v: %s", s, err, in.json())
			continue
		}
		var want Info // as encoding/json encodes and decodes it
		b, _ := json.Marshal(in)
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if out != want {
			t.Errorf("%q: read back %+v, want %+v", s, out, want)
		}
	}
	if got, want := (Info{"p", "1", "", "go1"}).json(), `{"program":"p","version":"1","revision":"","goVersion":"go1"}`; got != want {
		t.Errorf("json: %s, want %s", got, want)
	}
}
