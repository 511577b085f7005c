package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics and parses the text exposition format.
func scrape(t testing.TB, p *proc) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// labels ("k=v,k=v"); for a histogram, its sample count. -1 if absent.
func value(fams map[string]*dto.MetricFamily, name, labels string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	want := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			want[k] = v
		}
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

// expectMetrics polls /metrics until every expectation holds, then returns
// the last scrape. Deliveries are counted as receivers' writers finish, so
// counters may lag the traffic briefly.
func expectMetrics(t testing.TB, p *proc, want map[string]float64) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	var wrong []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		fams = scrape(t, p)
		wrong = wrong[:0]
		for key, v := range want {
			name, labels, _ := strings.Cut(key, "{")
			if got := value(fams, name, strings.TrimSuffix(labels, "}")); got != v {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", key, got, v))
			}
		}
		if len(wrong) == 0 {
			return fams
		}
	}
	sort.Strings(wrong)
	t.Fatalf("metrics after traffic:\n  %s", strings.Join(wrong, "\n  "))
	return nil
}

// Real traffic of every kind, then /metrics says exactly what happened.
func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	const token = "metrics-test-token"
	p := startProc(t, "--admin-token", token, "--buffer-bytes", "64KiB", "--max-message-bytes", "1MiB")

	// One refused handshake.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := websocket.Dial(ctx, p.ws()+"?id=bad%20id&groupName=g", nil); err == nil {
		t.Fatal("a bad id was accepted")
	}

	a := dial(t, p.addr(), "a", "g")
	b := dial(t, p.addr(), "b", "g")
	c := dial(t, p.addr(), "c", "other")
	big := dial(t, p.addr(), "big", "big")
	waitFor(t, 10*time.Second, "4 connections", func() bool { return value(scrape(t, p), "wsproxy_connections", "") == 4 })

	send(t, a, websocket.MessageText, []byte("hello")) // 5 bytes to b
	if _, m := receive(t, b); string(m) != "hello" {
		t.Fatalf("b got %q", m)
	}
	blob := bytes.Repeat([]byte{7}, 200<<10) // streamed to a
	send(t, b, websocket.MessageBinary, blob)
	if typ, m := receive(t, a); typ != websocket.MessageBinary || !bytes.Equal(m, blob) {
		t.Fatalf("a got %v of %d bytes", typ, len(m))
	}
	// Through the API: 1 byte to a and b.
	if st, body := p.api(t, "POST", "/api/groups/g/messages", token, "text/plain", strings.NewReader("x")); st != 202 {
		t.Fatalf("publish: %d %s", st, body)
	}
	receive(t, a)
	receive(t, b)
	if st, _ := p.api(t, "GET", "/api/groups", "", "", nil); st != 401 {
		t.Fatalf("no token: %d", st)
	}
	if st, _ := p.api(t, "DELETE", "/api/groups/other/members/c", token, "", nil); st != 204 {
		t.Fatalf("kick: %d", st)
	}
	if code := websocket.CloseStatus(closeOf(c, 10*time.Second)); code != 4003 {
		t.Fatalf("kicked: %d", code)
	}
	// Over --max-message-bytes: closed with 1009, not counted as received.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	_ = big.Write(ctx2, websocket.MessageBinary, make([]byte, 2<<20))
	if code := websocket.CloseStatus(closeOf(big, 10*time.Second)); code != websocket.StatusMessageTooBig {
		t.Fatalf("too big: %d", code)
	}

	fams := expectMetrics(t, p, map[string]float64{
		"wsproxy_connections":                                                         2,
		"wsproxy_connections_total":                                                   4,
		"wsproxy_groups":                                                              1,
		"wsproxy_queued_bytes":                                                        0,
		"wsproxy_handshake_rejections_total{reason=bad_id}":                           1,
		"wsproxy_messages_in_total{type=text}":                                        2, // hello, x
		"wsproxy_messages_in_total{type=binary}":                                      1,
		"wsproxy_bytes_in_total{type=text}":                                           6,
		"wsproxy_bytes_in_total{type=binary}":                                         200 << 10,
		"wsproxy_deliveries_total{type=text}":                                         3, // hello→b, x→a, x→b
		"wsproxy_deliveries_total{type=binary}":                                       1,
		"wsproxy_bytes_out_total{type=text}":                                          7,
		"wsproxy_bytes_out_total{type=binary}":                                        200 << 10,
		"wsproxy_message_size_bytes":                                                  3,
		"wsproxy_delivery_latency_seconds":                                            4,
		"wsproxy_closes_total{code=4003,by=proxy}":                                    1,
		"wsproxy_closes_total{code=1009,by=proxy}":                                    1,
		"wsproxy_close_frames_total{result=sent}":                                     2,
		"wsproxy_api_requests_total{route=/api/groups/{group}/messages,code=202}":     1,
		"wsproxy_api_requests_total{route=/api/groups,code=401}":                      1,
		"wsproxy_api_requests_total{route=/api/groups/{group}/members/{id},code=204}": 1,
	})
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	// No metric is labelled by anything unbounded, such as a group or an id.
	allowed := map[string]bool{"type": true, "code": true, "by": true, "reason": true, "route": true, "result": true, "action": true}
	for name, f := range fams {
		if !strings.HasPrefix(name, "wsproxy_") {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %q", name, l.GetName())
				}
				if v := l.GetValue(); v == "g" || v == "a" || v == "other" {
					t.Errorf("%s has a label value that is a group or id: %q", name, v)
				}
			}
		}
	}
}

// A receiver that reads nothing is evicted under --slow-consumer=disconnect,
// and that is counted.
func TestMetricsEviction(t *testing.T) {
	t.Parallel()
	// An evicted receiver is given --write-timeout to take its close frame:
	// this one never reads, so it is cut off after that.
	p := startProc(t, "--slow-consumer", "disconnect", "--send-queue-bytes", "64KiB", "--write-timeout", "1s")
	sender := dial(t, p.addr(), "sender", "g")
	dial(t, p.addr(), "stuck", "g") // never reads
	waitFor(t, 10*time.Second, "2 connections", func() bool { return value(scrape(t, p), "wsproxy_connections", "") == 2 })

	msg := make([]byte, 32<<10)
	for i := 0; ; i++ {
		if value(scrape(t, p), "wsproxy_evictions_total", "reason=queue_full") == 1 {
			break
		}
		if i > 4000 { // 128 MiB: far beyond any socket buffer
			t.Fatal("the stuck receiver was never evicted")
		}
		for range 32 {
			send(t, sender, websocket.MessageBinary, msg)
		}
	}
	expectMetrics(t, p, map[string]float64{
		"wsproxy_evictions_total{reason=queue_full}": 1,
		"wsproxy_closes_total{code=1008,by=proxy}":   1,
		"wsproxy_connections":                        1,
	})
}
