package buildmetrics

import (
	"runtime"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector("devid-hostd"))
	i := buildinfo.Get("devid-hostd")
	want := `# HELP devid_build_info The build of this devid program: always 1, the build in the labels.
# TYPE devid_build_info gauge
devid_build_info{goversion="` + runtime.Version() + `",program="devid-hostd",revision="` + i.Revision + `",version="` + i.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), Name); err != nil {
		t.Error(err)
	}
}
