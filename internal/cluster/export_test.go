package cluster

import (
	"testing"
	"time"
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

// crash ends the node's link and goroutines with nothing said to anyone.
func (n *Node) crash() {
	n.closedOnce.Do(func() { close(n.closed) })
	n.stopWatcher()
	n.nc.Close()
	n.wg.Wait()
}

// labelValue is the value of a metric's series whose label is value.
func labelValue(t testing.TB, n *node, name, label, value string) float64 {
	t.Helper()
	mfs, err := n.met.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// states is the number of groups this node keeps sending state for, and of
// (origin, group) states it keeps receiving.
func (n *Node) states() (out, in int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.out), len(n.in)
}

// orderKVStream is the order bucket's number of replicas.
func (n *Node) orderKVStream(t testing.TB) int {
	t.Helper()
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	s, err := n.js.Stream(ctx, "KV_"+n.cfg.Name+"_order")
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config.Replicas
}
