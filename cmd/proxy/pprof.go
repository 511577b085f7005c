package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"
)

// pprofEnv names the environment variable that turns on net/http/pprof on a
// separate loopback listener, for profiling. It is off by default and is
// deliberately not a flag: it is a debugging aid, not part of the proxy's
// configuration surface (see BENCHMARKS.md).
const pprofEnv = "WSPROXY_PPROF_ADDR"

// startPprof serves /debug/pprof/ on addr, which must be a loopback address.
// The returned function stops it.
func startPprof(addr string, log zerolog.Logger) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s must be a loopback address such as 127.0.0.1:6060", pprofEnv)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn().Err(err).Msg("pprof listener")
		}
	}()
	log.Warn().Str("addr", ln.Addr().String()).Msg("pprof enabled (" + pprofEnv + ")")
	return func() { _ = srv.Close() }, nil
}
