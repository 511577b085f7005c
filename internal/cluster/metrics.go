package cluster

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsproxy/wsproxy/internal/metrics"
)

// lossReasons are the label values of wsproxy_bus_losses_total: every way
// this node learns that members may have missed messages (or that a node
// fell behind), each counted once per event.
var lossReasons = []string{"gap", "nats_slow", "bus_lost", "peer_lost", "purged", "fenced", "cut", "overflow", "malformed"}

// busMetrics are the bus's series (no group or id labels).
type busMetrics struct {
	up                  prometheus.Gauge
	pubMsgs, pubBytes   prometheus.Counter
	recvMsgs, recvBytes prometheus.Counter
	pubFailed           prometheus.Counter
	losses              map[string]prometheus.Counter
	creditWaits         prometheus.Counter
	creditWaitSeconds   prometheus.Counter
	leaseWaitSeconds    prometheus.Counter
	registry            *prometheus.CounterVec
	registrySeconds     prometheus.Histogram
}

func newBusMetrics(m *metrics.Metrics, n *Node) *busMetrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	b := &busMetrics{
		up:                prometheus.NewGauge(prometheus.GaugeOpts{Name: "wsproxy_bus_up", Help: "1 while this node is connected to NATS."}),
		pubMsgs:           c("wsproxy_bus_published_messages_total", "Chunks published to the bus."),
		pubBytes:          c("wsproxy_bus_published_bytes_total", "Bytes published to the bus, headers included."),
		recvMsgs:          c("wsproxy_bus_received_messages_total", "Chunks received from the bus."),
		recvBytes:         c("wsproxy_bus_received_bytes_total", "Bytes received from the bus, headers included."),
		pubFailed:         c("wsproxy_bus_publish_failures_total", "Chunks that could not be published (the bus was gone); the receivers see the gap."),
		creditWaits:       c("wsproxy_bus_credit_waits_total", "Times a sender waited for another node's room (backpressure across nodes)."),
		creditWaitSeconds: c("wsproxy_bus_credit_wait_seconds_total", "Time senders spent waiting for other nodes' room."),
		leaseWaitSeconds:  c("wsproxy_bus_stream_order_wait_seconds_total", "Time streamed messages waited for their group's cluster-wide stream order."),
		losses:            map[string]prometheus.Counter{},
		registry: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsproxy_registry_ops_total",
			Help: "Member registry operations (JetStream KV) by op (put, delete, purge) and result (ok, conflict, error)."}, []string{"op", "result"}),
		registrySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wsproxy_registry_put_seconds",
			Help: "How long a join's registry put took.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	lossVec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsproxy_bus_losses_total",
		Help: "Events after which members were closed because they may have missed messages (4004), or a node fell behind (cut, overflow: 1008), by reason."}, []string{"reason"})
	for _, r := range lossReasons {
		b.losses[r] = lossVec.WithLabelValues(r)
	}
	for _, op := range []string{"put", "delete", "purge"} {
		for _, res := range []string{"ok", "conflict", "error"} {
			b.registry.WithLabelValues(op, res)
		}
	}
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wsproxy_bus_peers", Help: "Other live nodes this node hears from."}, func() float64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return float64(len(n.peers))
	})
	b.up.Set(1)
	m.Registry.MustRegister(b.up, b.pubMsgs, b.pubBytes, b.recvMsgs, b.recvBytes, b.pubFailed, lossVec,
		b.creditWaits, b.creditWaitSeconds, b.leaseWaitSeconds, b.registry, b.registrySeconds, peers)
	return b
}

func (b *busMetrics) loss(reason string) {
	if c, ok := b.losses[reason]; ok {
		c.Inc()
	}
}

// published counts chunks handed to NATS in one bus message of n bytes.
func (b *busMetrics) published(chunks, n int) {
	b.pubMsgs.Add(float64(chunks))
	b.pubBytes.Add(float64(n))
}

// received counts one bus message of n bytes, and chunks counts each chunk
// in it.
func (b *busMetrics) received(n int) { b.recvBytes.Add(float64(n)) }
func (b *busMetrics) chunk()         { b.recvMsgs.Inc() }
func (b *busMetrics) publishFailed() { b.pubFailed.Inc() }

func (b *busMetrics) creditWait(d time.Duration) {
	b.creditWaits.Inc()
	b.creditWaitSeconds.Add(d.Seconds())
}

func (b *busMetrics) leaseWait(d time.Duration) { b.leaseWaitSeconds.Add(d.Seconds()) }

func (b *busMetrics) registryOp(op string, err error, d time.Duration) {
	res := "ok"
	switch {
	case err == nil:
	case isConflict(err):
		res = "conflict"
	default:
		res = "error"
	}
	b.registry.WithLabelValues(op, res).Inc()
	if op == "put" && err == nil {
		b.registrySeconds.Observe(d.Seconds())
	}
}

func isConflict(err error) bool {
	return errors.Is(err, errKeyExists)
}
