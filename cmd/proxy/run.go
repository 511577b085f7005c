package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/certfile"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/version"
)

// The HTTP server's own limits, on every connection until it is upgraded
// (variables only so that tests can shorten them):
//   - readHeaderTimeout: a client must send its whole request head in this
//     time, or the connection is closed (slowloris, half-open handshakes);
//   - maxHeaderBytes: a request head larger than this gets 431 (net/http
//     allows 4 KiB of slack beyond it); 16 KiB, as Node.js, is room for
//     cookies and a bearer token, where net/http's default is 1 MiB;
//   - idleTimeout: a keep-alive connection with no request for this long is
//     closed.
var (
	readHeaderTimeout = 10 * time.Second
	maxHeaderBytes    = 16 << 10
	idleTimeout       = 2 * time.Minute
)

// run is the whole program: it serves until ctx is cancelled, then shuts down
// gracefully and returns nil. Logs go to stderr; usage and --version to
// stdout. environ, if given, is the whole environment (os.Environ()): a
// PROXY_* variable in it that no flag reads is warned about.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, environ ...string) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], getenv, stdout, stderr)
	}
	if wantsVersion(args) {
		fmt.Fprintln(stdout, "wsproxy", version.String())
		return nil
	}
	if len(args) > 0 && args[0] == "token" {
		return mintToken(args[1:], stdout)
	}
	cfg, err := config.Parse(args, getenv, stdout)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	for _, name := range config.UnknownVars(environ, healthcheckURLEnv) {
		log.Warn().Str("variable", name).Msg("unknown PROXY_ variable ignored: no flag reads it (proxy --help lists them)")
	}

	if addr := getenv(pprofEnv); addr != "" {
		stop, err := startPprof(addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	if cfg.Auth == "jwt" {
		v, err := auth.Load(cfg.JWT)
		if err != nil {
			return err
		}
		cfg.Forward.Authorize = v.Authorize
	}
	// The admin token may also watch any group's presence (docs/protocol.md
	// section 11); it never admits a member.
	cfg.Forward.AdminToken = cfg.AdminToken
	var tlsConfig *tls.Config
	if cfg.TLSCertFile != "" {
		certs, err := certfile.New(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return err
		}
		tlsConfig = certs.Config(func(err error) {
			if err != nil {
				log.Error().Err(err).Msg("tls: certificate files changed but do not load; serving the previous certificate")
				return
			}
			log.Info().Msg("tls: certificate reloaded")
		})
	}

	m := metrics.New()
	fwd := forward.NewServer(cfg.Forward, log, m)
	node, err := startCluster(ctx, cfg, fwd, log, m)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           routes(cfg, log, m, fwd, clusterAPI(node)),
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// No ReadTimeout or WriteTimeout: they would apply to upgraded
		// WebSocket connections too, which keep their own limits.
		IdleTimeout: idleTimeout,
		ErrorLog:    newStdLogger(log),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	} else if cfg.Auth == "jwt" && !isLoopback(ln.Addr()) {
		log.Warn().Msg("--auth=jwt without TLS: tokens cross the network in the clear unless a proxy in front terminates TLS (docs/security.md)")
	}
	f := cfg.Forward
	var trusted []string
	for _, p := range f.Admission.TrustedProxies {
		trusted = append(trusted, p.String())
	}
	log.Info().
		Str("version", version.String()).
		Str("addr", ln.Addr().String()).
		Str("max_message_bytes", config.FormatSize(f.MaxMessageBytes)).
		Str("buffer_bytes", config.FormatSize(int64(f.BufferBytes))).
		Str("send_queue_bytes", config.FormatSize(f.SendQueueBytes)).
		Stringer("slow_consumer", f.SlowConsumer).
		Stringer("message_idle_timeout", f.MessageIdleTimeout).
		Stringer("write_timeout", f.WriteTimeout).
		Stringer("ping_interval", f.PingInterval).
		Stringer("ping_timeout", f.PingTimeout).
		Stringer("shutdown_timeout", cfg.ShutdownTimeout).
		Strs("allowed_origins", f.AllowedOrigins).
		Bool("admin_token", cfg.AdminToken != "").
		Str("memory_limit", config.FormatSize(cfg.MemoryLimit)).
		Str("memory_budget", config.FormatSize(f.MemoryBudget)).
		Int("max_groups", f.MaxGroups).
		Int("max_members_per_group", f.MaxMembersPerGroup).
		Float64("message_rate", f.MessageRate).
		Float64("byte_rate", f.ByteRate).
		Int("max_connections", f.Admission.MaxConnections).
		Int("max_connections_per_ip", f.Admission.MaxConnectionsPerIP).
		Float64("connect_rate_per_ip", f.Admission.ConnectRatePerIP).
		Int("connect_burst_per_ip", f.Admission.ConnectBurstPerIP).
		Strs("trusted_proxies", trusted).
		Str("auth", cfg.Auth).
		Bool("tls", tlsConfig != nil).
		Str("nats_url", redactURL(cfg.NATSURL)).
		Str("cluster_name", cfg.ClusterName).
		Str("node_name", cfg.NodeName).
		Msg("proxy listening")
	page, ws := urls(ln.Addr())
	log.Info().Msgf("open %s in a browser, or connect any WebSocket client to %s", page, ws)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// The parent context is already cancelled: every timeout from here on
	// comes from a fresh one.
	log.Info().Stringer("timeout", cfg.ShutdownTimeout).Msg("shutting down: draining")
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	fwd.Shutdown(drainCtx)
	cancel()
	if node != nil {
		// After the drain: the others learn that this node left, with
		// nothing in flight, and close nobody.
		node.Close()
	}
	httpCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(httpCtx); err != nil {
		log.Warn().Err(err).Msg("http shutdown")
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info().Msg("shutdown complete")
	return nil
}

// wantsVersion reports whether args ask for the version (--version or
// -version before any "--").
func wantsVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--version", "-version":
			return true
		case "--":
			return false
		}
	}
	return false
}

// urls are the page's URL and a sample WebSocket URL for the listener at
// addr, as a user on this machine would type them: an address of every
// interface (":8080") is localhost.
func urls(addr net.Addr) (page, ws string) {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/", "ws://" + addr.String() + "/ws?id=alice&groupName=demo"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	hp := net.JoinHostPort(host, port)
	return "http://" + hp + "/", "ws://" + hp + "/ws?id=alice&groupName=demo"
}

func newLogger(cfg *config.Config, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || level < zerolog.DebugLevel || level > zerolog.ErrorLevel {
		return zerolog.Logger{}, fmt.Errorf("log-level must be debug, info, warn or error")
	}
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// isLoopback reports whether addr listens on a loopback address only.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
