package main

import (
	"context"
	"net/url"
	"time"

	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/cluster"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// startCluster links fwd to the other proxies of cfg's cluster, if
// --nats-url is set (nil otherwise). It returns at once: the node connects
// in the background, retrying until NATS answers, and is not ready (503 on
// /readyz and /ws) until then.
func startCluster(ctx context.Context, cfg *config.Config, fwd *forward.Server, log zerolog.Logger, m *metrics.Metrics) (*cluster.Node, error) {
	if cfg.NATSURL == "" {
		return nil, nil
	}
	node, err := cluster.New(cluster.Config{
		URL:          cfg.NATSURL,
		Name:         cfg.ClusterName,
		Node:         cfg.NodeName,
		Heartbeat:    cfg.ClusterHeartbeat,
		PeerTimeout:  cfg.ClusterPeerTimeout,
		ChunkBytes:   cfg.BusChunkBytes,
		WindowBytes:  cfg.BusWindowBytes,
		Policy:       cfg.Forward.SlowConsumer,
		WriteTimeout: cfg.Forward.WriteTimeout,
	}, fwd, log, m)
	if err != nil {
		return nil, err
	}
	fwd.SetBus(node)
	go func() {
		for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			err := node.Start(ctx)
			if err == nil {
				return
			}
			log.Warn().Err(err).Stringer("retry_in", wait).Msg("cluster: cannot join yet")
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
	return node, nil
}

// redactURL hides any password in a NATS URL, for the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
