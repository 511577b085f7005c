package main

import (
	"log"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/api"
	"github.com/wsproxy/wsproxy/internal/cluster"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/httpjson"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/version"
	"github.com/wsproxy/wsproxy/internal/web"
)

// routes lists every route the proxy serves. cl is the cluster node (nil for
// a single node): the admin API is then cluster-wide.
func routes(cfg *config.Config, log zerolog.Logger, m *metrics.Metrics, fwd *forward.Server, cl api.Cluster) http.Handler {
	r := chi.NewRouter()
	r.Handle("/ws", fwd)
	r.Handle("/ws/events", fwd.Events())
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok", "version": version.String()})
	})
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if fwd.Draining() {
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
			return
		}
		if err := fwd.Ready(); err != nil {
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	r.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	r.Method(http.MethodGet, "/", web.Handler())
	r.Method(http.MethodHead, "/", web.Handler())
	r.Mount("/api", api.New(fwd, api.Options{
		Token:           cfg.AdminToken,
		MaxMessageBytes: cfg.Forward.MaxMessageBytes,
		BodyIdleTimeout: cfg.Forward.MessageIdleTimeout,
		Cluster:         cl,
	}, log, m))
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Error(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Error(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

// clusterAPI is node for the admin API: nil (not a nil *cluster.Node) for
// a single node.
func clusterAPI(node *cluster.Node) api.Cluster {
	if node == nil {
		return nil
	}
	return node
}

// newStdLogger routes net/http's own error log through zerolog.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zerologWriter{l}, "", 0)
}

type zerologWriter struct{ l zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.l.Warn().Str("source", "net/http").Msg(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		return p[:n-1]
	}
	return p
}
