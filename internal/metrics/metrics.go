// Package metrics defines the proxy's Prometheus metrics. Labels are bounded
// sets (message type, close code, reason); never a group name or an id.
package metrics

import (
	"strconv"
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
	rejections       *prometheus.CounterVec
	evictions        *prometheus.CounterVec
	closes           *prometheus.CounterVec
	apiRequests      *prometheus.CounterVec

	messagesIn  [3]prometheus.Counter // indexed by websocket.MessageType
	bytesIn     [3]prometheus.Counter
	deliveries  [3]prometheus.Counter
	bytesOut    [3]prometheus.Counter
	messageSize prometheus.Histogram
	latency     prometheus.Histogram
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
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_handshake_rejections_total", Help: "Handshakes refused, by reason.",
		}, []string{"reason"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_evictions_total", Help: "Receivers closed because they fell behind, by reason.",
		}, []string{"reason"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_closes_total", Help: "Connections ended, by close code and by who closed (proxy or peer).",
		}, []string{"code", "by"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsproxy_api_requests_total", Help: "Admin API requests, by route pattern and HTTP status.",
		}, []string{"route", "code"}),
		messageSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wsproxy_message_size_bytes", Help: "Size of messages received from clients.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 12), // 64 B .. 256 MiB
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wsproxy_delivery_latency_seconds", Help: "Time from a message being queued for a receiver to its being written.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12), // 50 µs .. ~3 min
		}),
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
	r.MustRegister(m.connections, m.connectionsTotal, m.rejections, m.evictions, m.closes, m.apiRequests,
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
	m.closes.WithLabelValues(strconv.Itoa(int(code)), by).Inc()
}

// Rejected counts a refused handshake.
func (m *Metrics) Rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// Evicted counts a receiver closed for falling behind.
func (m *Metrics) Evicted(reason string) { m.evictions.WithLabelValues(reason).Inc() }

// Received counts a whole message received from a client.
func (m *Metrics) Received(t websocket.MessageType, n int64) {
	m.messagesIn[t].Inc()
	m.bytesIn[t].Add(float64(n))
	m.messageSize.Observe(float64(n))
}

// Delivered counts a message written to a receiver, queued at enqueued.
func (m *Metrics) Delivered(t websocket.MessageType, n int64, queued time.Duration) {
	m.deliveries[t].Inc()
	m.bytesOut[t].Add(float64(n))
	m.latency.Observe(queued.Seconds())
}

// APIRequest counts an admin API request. route is the route pattern (such as
// /api/groups/{group}), never the path itself.
func (m *Metrics) APIRequest(route string, status int) {
	m.apiRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}
