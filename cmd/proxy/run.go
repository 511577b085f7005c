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
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/certfile"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// run is the whole program: it serves until ctx is cancelled, then shuts down
// gracefully and returns nil. Logs go to stderr; usage to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], getenv, stdout, stderr)
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

	if addr := getenv(pprofEnv); addr != "" {
		stop, err := startPprof(addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	if cfg.Auth == "jwt" {
		v, err := auth.Load(cfg.JWT)
		if err != nil {
			return err
		}
		cfg.Forward.Authorize = v.Authorize
	}
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
	srv := &http.Server{
		Handler:           routes(cfg, log, m, fwd),
		ReadHeaderTimeout: 10 * time.Second,
		// Headers carry at most a token or two: an unauthenticated client
		// may not hold net/http's default of 1 MiB of them.
		MaxHeaderBytes: 64 << 10,
		// No ReadTimeout or WriteTimeout: they would apply to upgraded
		// WebSocket connections too, which keep their own limits.
		IdleTimeout: 2 * time.Minute,
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
	log.Info().
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
		Str("auth", cfg.Auth).
		Bool("tls", tlsConfig != nil).
		Msg("proxy listening")

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
