package metrics

import (
	"strconv"
	"testing"

	"github.com/coder/websocket"
)

// series is each sample of family name, keyed by its labels as
// "name=value,name=value" in name order.
func series(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	for _, s := range gather(t, m, name).GetMetric() {
		key := ""
		for i, l := range s.GetLabel() {
			if i > 0 {
				key += ","
			}
			key += l.GetName() + "=" + l.GetValue()
		}
		got[key] = s.GetCounter().GetValue()
	}
	return got
}

// A peer chooses its close code, so 300 different codes must not make 300
// series: codes the RFC and the SPEC define keep their number, the rest
// share "other".
func TestCloseCodesBounded(t *testing.T) {
	m := New()
	for code := 3000; code < 3300; code++ {
		m.Disconnected(websocket.StatusCode(code), true)
	}
	m.Disconnected(4999, true)
	m.Disconnected(1004, true) // reserved, never defined
	defined := []int{1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1013, 1015,
		4001, 4002, 4003, 4004, 4005}
	for _, code := range defined {
		m.Disconnected(websocket.StatusCode(code), false)
	}

	got := series(t, m, "wsproxy_closes_total")
	if len(got) != len(defined)+1 {
		t.Errorf("%d series, want %d: one per defined code, and other", len(got), len(defined)+1)
	}
	if n := got["by=peer,code=other"]; n != 302 {
		t.Errorf(`code="other",by="peer" = %v, want 302`, n)
	}
	for _, code := range defined {
		if n := got["by=proxy,code="+strconv.Itoa(code)]; n != 1 {
			t.Errorf("code %d counted %v times under its own number, want 1", code, n)
		}
	}
}

// Reasons come from fixed sets, present from the start; a value outside
// them, which no caller should pass, still adds at most one series.
func TestReasonsBounded(t *testing.T) {
	m := New()
	for name, reasons := range map[string][]string{
		"wsproxy_handshake_rejections_total": rejectReasons,
		"wsproxy_evictions_total":            evictReasons,
	} {
		got := series(t, m, name)
		if len(got) != len(reasons) {
			t.Errorf("%s starts with %d series, want %d: %v", name, len(got), len(reasons), got)
		}
		for _, r := range reasons {
			if n, ok := got["reason="+r]; !ok || n != 0 {
				t.Errorf("%s{reason=%q} = %v (present %v), want 0", name, r, n, ok)
			}
		}
	}

	m.Rejected("bad_id")
	m.Evicted("queue_full")
	for i := range 300 {
		m.Rejected("client-" + strconv.Itoa(i))
		m.Evicted("client-" + strconv.Itoa(i))
	}
	for name, want := range map[string]map[string]float64{
		"wsproxy_handshake_rejections_total": {"reason=bad_id": 1, "reason=other": 300},
		"wsproxy_evictions_total":            {"reason=queue_full": 1, "reason=other": 300},
	} {
		got := series(t, m, name)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s{%s} = %v, want %v", name, k, got[k], v)
			}
		}
		if n := len(got); n > len(rejectReasons)+1 {
			t.Errorf("%s has %d series after 300 unknown reasons", name, n)
		}
	}
}
