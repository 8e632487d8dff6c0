package inventory_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// FuzzImport: a dry-run import of any bytes, as devices and as users, never
// panics; it fails only with an *inventory.Error, and what it accepts is a
// report with one result per row, each with a line, counted once.
func FuzzImport(f *testing.F) {
	s, _ := newStore(f)
	mustUser(f, s, "alice@example.com", "alice", "sre")
	a, _ := ekB64(f, 0)
	if _, err := s.ImportDevices("root", "seed.csv", []byte("ek,name,kind,collection,owner\n"+a+",laptop-a,workstation,web,alice@example.com\n"), false); err != nil {
		f.Fatal(err)
	}
	b, _ := ekB64(f, 1)
	for _, seed := range []string{
		"ek,name,kind\n" + a + ",laptop-a,workstation\n" + b + ",b,host\n",
		"# c\nek,name,kind,owner,collection,status,id\n" + a + ",x,workstation,ALICE@example.com,,quarantined,\n",
		fmt.Sprintf("[{\"ek\": %q, \"name\": \"a\", \"kind\": \"host\", \"Owner\": null}]", a),
		"email,login,groups\nalice@example.com,alice,sre;dev\nbob@example.com,bob,\n",
		"email,login\nb\xffb@example.com,b\n",
		`[{"email":"Alice@Example.com","login":"alice"},{"email":"b@example.com","login":"b","groups":[]}]`,
		"[{\"email\":\"b\\udc00@example.com\",\"login\":\"b\"}]",
		"name,kind,serial,assettag,os,source,sourceid\nmbp,workstation,C02X,A-7,macOS,jamf,12\nweb,host,,A-8,,,\n",
		"name,kind,serial,ek\nlaptop-a,workstation,C02X," + a + "\n",
		`[{"name":"p","kind":"host","serial":"S1","status":"pending"},{"name":"q","kind":"host","assetTag":"S1"}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, imp := range []func(string, string, []byte, bool) (*inventory.ImportReport, error){s.ImportDevices, s.ImportUsers} {
			rep, err := imp("fuzz", "f.csv", data, true)
			if err != nil {
				var ie *inventory.Error
				if !errors.As(err, &ie) {
					t.Fatalf("error %v is not an *inventory.Error", err)
				}
				continue
			}
			n := 0
			for _, c := range rep.Counts {
				n += c
			}
			if !rep.DryRun || n != len(rep.Results) || n == 0 {
				t.Fatalf("report %+v", rep)
			}
			for _, r := range rep.Results {
				if r.Line < 1 || r.Subject == "" {
					t.Fatalf("result %+v", r)
				}
			}
		}
	})
}
