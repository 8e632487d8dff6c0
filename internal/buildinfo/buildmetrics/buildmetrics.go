// Package buildmetrics exports the build a daemon runs as a Prometheus
// metric, devid_build_info{program,version,goversion,revision} = 1, from
// package buildinfo. It is a package of its own so that the programs without
// metrics (devid-principals above all, which sshd runs at every login) do
// not link the Prometheus client.
package buildmetrics

import (
	"github.com/devid-ssh/devid/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
)

// Name is the metric's name.
const Name = "devid_build_info"

// Collector returns the metric for program ("devid-hostd"), to register
// on the program's registry: a gauge that is always 1, its labels the
// build's program, version, Go version and revision ("" when unknown).
func Collector(program string) prometheus.Collector {
	i := buildinfo.Get(program)
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: Name,
		Help: "The build of this devid program: always 1, the build in the labels.",
		ConstLabels: prometheus.Labels{
			"program":   i.Program,
			"version":   i.Version,
			"goversion": i.GoVersion,
			"revision":  i.Revision,
		},
	}, func() float64 { return 1 })
}
