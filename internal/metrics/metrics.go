// Package metrics defines the proxy's Prometheus metrics. Every label value
// comes from a fixed set (message type, close code, reason, route pattern):
// never a group name, an id, or anything else a client chose.
package metrics

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector. Its methods are safe for concurrent use and
// cheap enough for the per-message path (no label lookups there).
type Metrics struct {
	Registry *prometheus.Registry

	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	rejections       fixedLabel
	evictions        fixedLabel
	closes           *prometheus.CounterVec
	closeFrames      [2]prometheus.Counter // not sent, sent
	rateLimited      fixedLabel
	apiRequests      *prometheus.CounterVec

	messagesIn  [3]prometheus.Counter // indexed by websocket.MessageType
	bytesIn     [3]prometheus.Counter
	deliveries  [3]prometheus.Counter
	bytesOut    [3]prometheus.Counter
	messageSize prometheus.Histogram
	latency     *latencyHistogram
}

// New creates the collectors and registers them, with the Go and process
// collectors, on a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsproxy_connections", Help: "WebSocket connections open now.",
		}),
		connectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsproxy_connections_total", Help: "WebSocket connections accepted.",
		}),
		rejections: newFixedLabel(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_handshake_rejections_total", Help: "Handshakes refused, by reason.",
		}, []string{"reason"}), rejectReasons),
		evictions: newFixedLabel(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_evictions_total", Help: "Connections closed because they fell behind (queue_full, write_timeout) or held the most of a spent memory budget (memory: a receiver's queue; memory_unfinished: a sender's unfinished message).",
		}, []string{"reason"}), evictReasons),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_closes_total",
			Help: "Connections ended, by close code and by who closed (proxy or peer). " +
				"Codes that RFC 6455 section 7.4.1 and the proxy's SPEC do not define count as code=\"" + other + "\".",
		}, []string{"code", "by"}),
		rateLimited: newFixedLabel(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_rate_limited_total",
			Help: "Times a connection went over --message-rate or --byte-rate, by what the proxy did: throttle (stopped reading for a while) or close (1008).",
		}, []string{"action"}), []string{"throttle", "close"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_api_requests_total", Help: "Admin API requests, by route pattern and HTTP status.",
		}, []string{"route", "code"}),
		messageSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wsproxy_message_size_bytes", Help: "Size of messages received from clients.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 12), // 64 B .. 256 MiB
		}),
		latency: &latencyHistogram{desc: prometheus.NewDesc("wsproxy_delivery_latency_seconds",
			"Time from a message being queued for a receiver to its being written.", nil, nil)},
	}
	msgIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsproxy_messages_in_total", Help: "Messages received from clients, by type.",
	}, []string{"type"})
	bytesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsproxy_bytes_in_total", Help: "Message bytes received from clients, by type.",
	}, []string{"type"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsproxy_deliveries_total", Help: "Messages written to receivers, by type.",
	}, []string{"type"})
	bytesOut := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsproxy_bytes_out_total", Help: "Message bytes written to receivers, by type.",
	}, []string{"type"})
	for _, t := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		name := TypeName(t)
		m.messagesIn[t] = msgIn.WithLabelValues(name)
		m.bytesIn[t] = bytesIn.WithLabelValues(name)
		m.deliveries[t] = deliveries.WithLabelValues(name)
		m.bytesOut[t] = bytesOut.WithLabelValues(name)
	}
	closeFrames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsproxy_close_frames_total",
		Help: "Connections the proxy closed, by whether its close frame reached the socket whole (sent) or the connection was cut without one (not_sent).",
	}, []string{"result"})
	m.closeFrames[0] = closeFrames.WithLabelValues("not_sent")
	m.closeFrames[1] = closeFrames.WithLabelValues("sent")
	r.MustRegister(m.connections, m.connectionsTotal, m.rejections.vec, m.evictions.vec, m.rateLimited.vec, m.closes, m.apiRequests, closeFrames,
		m.messageSize, m.latency, msgIn, bytesIn, deliveries, bytesOut,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// TypeName is "text" or "binary".
func TypeName(t websocket.MessageType) string {
	if t == websocket.MessageText {
		return "text"
	}
	return "binary"
}

// GaugeFunc registers a gauge whose value is read from f at scrape time.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Connected counts a new connection.
func (m *Metrics) Connected() {
	m.connections.Inc()
	m.connectionsTotal.Inc()
}

// Disconnected counts a connection's end with the close code it ended with.
func (m *Metrics) Disconnected(code websocket.StatusCode, byPeer bool) {
	m.connections.Dec()
	by := "proxy"
	if byPeer {
		by = "peer"
	}
	m.closes.WithLabelValues(closeCodeLabel(code), by).Inc()
}

// CloseFrame counts a connection the proxy closed, by whether its close frame
// went out.
func (m *Metrics) CloseFrame(sent bool) {
	if sent {
		m.closeFrames[1].Inc()
	} else {
		m.closeFrames[0].Inc()
	}
}

// Rejected counts a refused handshake. reason is one of rejectReasons; any
// other value is counted as "other".
func (m *Metrics) Rejected(reason string) { m.rejections.inc(reason) }

// Evicted counts a connection closed for falling behind or, under a spent
// memory budget, for pinning the most. reason is one of evictReasons; any
// other value is counted as "other".
func (m *Metrics) Evicted(reason string) { m.evictions.inc(reason) }

// RateLimited counts a connection going over its rate: throttled, or
// closed.
func (m *Metrics) RateLimited(closed bool) {
	if closed {
		m.rateLimited.inc("close")
	} else {
		m.rateLimited.inc("throttle")
	}
}

// Received counts a whole message received from a client.
func (m *Metrics) Received(t websocket.MessageType, n int64) {
	m.messagesIn[t].Inc()
	m.bytesIn[t].Add(float64(n))
	m.messageSize.Observe(float64(n))
}

// Delivered counts a message written to a receiver, queued for that long.
// A writer delivering many messages uses Deliveries instead.
func (m *Metrics) Delivered(t websocket.MessageType, n int64, queued time.Duration) {
	var d Deliveries
	d.Add(t, n, queued)
	m.AddDeliveries(&d)
}

// latencyBuckets are the upper bounds of wsproxy_delivery_latency_seconds:
// 50 µs to about 3 min.
var latencyBuckets = prometheus.ExponentialBuckets(0.00005, 2.5, numLatencyBuckets)

const numLatencyBuckets = 12

// Deliveries collects one writer's deliveries so that they reach the shared
// collectors in one go (AddDeliveries) rather than one message at a time:
// those collectors are shared by every session, and touching them per
// message costs more than the rest of a small message's delivery. The zero
// value is empty; a Deliveries belongs to one goroutine.
type Deliveries struct {
	msgs, bytes [3]uint64 // indexed by websocket.MessageType
	lat         [numLatencyBuckets + 1]uint64
	latSum      float64
}

// Add records one message of n bytes written to a receiver after being
// queued for that long.
func (d *Deliveries) Add(t websocket.MessageType, n int64, queued time.Duration) {
	d.msgs[t]++
	d.bytes[t] += uint64(n)
	v := queued.Seconds()
	i := 0
	for i < numLatencyBuckets && v > latencyBuckets[i] {
		i++
	}
	d.lat[i]++
	d.latSum += v
}

// Totals is the number of messages and bytes d holds.
func (d *Deliveries) Totals() (msgs, bytes int64) {
	for t := range d.msgs {
		msgs += int64(d.msgs[t])
		bytes += int64(d.bytes[t])
	}
	return msgs, bytes
}

// AddDeliveries adds what d collected to the collectors and empties d.
func (m *Metrics) AddDeliveries(d *Deliveries) {
	for t := range d.msgs {
		if d.msgs[t] > 0 {
			m.deliveries[t].Add(float64(d.msgs[t]))
			m.bytesOut[t].Add(float64(d.bytes[t]))
		}
	}
	m.latency.add(d)
	*d = Deliveries{}
}

// latencyHistogram is wsproxy_delivery_latency_seconds. Unlike
// prometheus.Histogram it takes whole batches of observations.
type latencyHistogram struct {
	desc    *prometheus.Desc
	counts  [numLatencyBuckets + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumBits atomic.Uint64                        // float64
}

func (h *latencyHistogram) add(d *Deliveries) {
	for i, n := range d.lat {
		if n > 0 {
			h.counts[i].Add(n)
		}
	}
	if d.latSum == 0 {
		return
	}
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d.latSum)) {
			return
		}
	}
}

func (h *latencyHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *latencyHistogram) Collect(ch chan<- prometheus.Metric) {
	buckets := make(map[float64]uint64, numLatencyBuckets)
	var n uint64
	for i, upper := range latencyBuckets {
		n += h.counts[i].Load()
		buckets[upper] = n
	}
	n += h.counts[numLatencyBuckets].Load()
	ch <- prometheus.MustNewConstHistogram(h.desc, n, math.Float64frombits(h.sumBits.Load()), buckets)
}

// APIRequest counts an admin API request. route is the route pattern (such as
// /api/groups/{group}), never the path itself.
func (m *Metrics) APIRequest(route string, status int) {
	m.apiRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// other is the label value that stands for any value outside a label's
// fixed set.
const other = "other"

// closeCodeLabel is code's value for the code label: its number if RFC 6455
// section 7.4.1 or SPEC section 6 defines it, else "other". A peer may close
// with any code from 1000 to 4999; each must not become a series of its own.
func closeCodeLabel(code websocket.StatusCode) string {
	switch {
	case 1000 <= code && code <= 1003, // normal, going away, protocol error, unsupported data
		1005 <= code && code <= 1011, // 1005 and 1006 are never sent: no status, abnormal closure
		code == 1013,                 // try again later (SPEC: group full)
		code == 1015,                 // TLS handshake failure, never sent
		4001 <= code && code <= 4005: // SPEC: replaced, sender aborted, kicked, missed messages, token expired
		return strconv.Itoa(int(code))
	}
	return other
}

// The reasons of wsproxy_handshake_rejections_total and
// wsproxy_evictions_total. Their series exist from the start, at 0.
var (
	rejectReasons = []string{
		"missing_id", "repeated_id", "bad_id", "missing_groupname", "repeated_groupname", "bad_group",
		"bad_query", "origin", "bad_origin", "not_upgrade", "bad_version", "bad_key", "method", "draining", "accept",
		"bus", // cluster mode: the node cannot reach the bus, or the claim failed
		"too_many_groups", "group_full",
		// Connection admission (internal/limits.Reasons).
		"max_connections", "ip_connections", "ip_rate", "ip_table_full",
		// authentication (SPEC section 9)
		"auth_missing", "auth_malformed", "auth_invalid", "auth_expired", "auth_id", "auth_group", "bad_subprotocol",
	}
	evictReasons = []string{"queue_full", "write_timeout", "memory", "memory_unfinished"}
)

// fixedLabel is a counter with one label whose values are a fixed set; inc
// counts any other value as "other", so the set of series stays bounded
// whatever a caller passes.
type fixedLabel struct {
	vec    *prometheus.CounterVec
	counts map[string]prometheus.Counter // read-only after newFixedLabel
}

func newFixedLabel(vec *prometheus.CounterVec, values []string) fixedLabel {
	f := fixedLabel{vec: vec, counts: make(map[string]prometheus.Counter, len(values))}
	for _, v := range values {
		f.counts[v] = vec.WithLabelValues(v)
	}
	return f
}

func (f fixedLabel) inc(value string) {
	if c, ok := f.counts[value]; ok {
		c.Inc()
		return
	}
	f.vec.WithLabelValues(other).Inc()
}
