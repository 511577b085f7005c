package cluster

import (
	"testing"
)

// counterValue is the sum of a metric's series on n.
func counterValue(t testing.TB, n *node, name string) float64 {
	t.Helper()
	mfs, err := n.met.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				v += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				v += g.GetValue()
			}
		}
	}
	return v
}
