package metrics

import (
	"math"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
)

func gather(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func TestDeliveriesReachCountersAndHistogram(t *testing.T) {
	m := New()
	var d Deliveries
	d.Add(websocket.MessageText, 10, 40*time.Microsecond)     // first bucket (<= 50 µs)
	d.Add(websocket.MessageBinary, 100, 100*time.Microsecond) // second (<= 125 µs)
	d.Add(websocket.MessageBinary, 1000, time.Hour)           // +Inf
	if msgs, bytes := d.Totals(); msgs != 3 || bytes != 1110 {
		t.Fatalf("Totals() = %d, %d; want 3, 1110", msgs, bytes)
	}
	m.AddDeliveries(&d)
	if msgs, _ := d.Totals(); msgs != 0 {
		t.Fatal("AddDeliveries did not empty d")
	}
	m.Delivered(websocket.MessageText, 5, time.Millisecond) // one at a time still works

	h := gather(t, m, "wsproxy_delivery_latency_seconds").GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 4 {
		t.Fatalf("sample count %d, want 4", h.GetSampleCount())
	}
	wantSum := 40e-6 + 100e-6 + 3600 + 1e-3
	if math.Abs(h.GetSampleSum()-wantSum) > 1e-9 {
		t.Fatalf("sum %v, want %v", h.GetSampleSum(), wantSum)
	}
	b := h.GetBucket()
	if len(b) != numLatencyBuckets {
		t.Fatalf("%d buckets, want %d", len(b), numLatencyBuckets)
	}
	// Cumulative: 1 at 50 µs, 2 at 125 µs, 3 from 1.95 ms on (the 1 ms one).
	if b[0].GetUpperBound() != 0.00005 || b[0].GetCumulativeCount() != 1 || b[1].GetCumulativeCount() != 2 {
		t.Fatalf("first buckets %v", b[:2])
	}
	if last := b[len(b)-1].GetCumulativeCount(); last != 3 {
		t.Fatalf("last finite bucket holds %d, want 3 (one observation is +Inf)", last)
	}

	for _, mf := range []struct {
		name string
		want float64
	}{{"wsproxy_deliveries_total", 4}, {"wsproxy_bytes_out_total", 1115}} {
		var sum float64
		for _, s := range gather(t, m, mf.name).GetMetric() {
			sum += s.GetCounter().GetValue()
		}
		if sum != mf.want {
			t.Errorf("%s = %v, want %v", mf.name, sum, mf.want)
		}
	}
}
