// Command proxysoak churns hostile WebSocket clients through wsproxy for a
// while and checks that every message arrives whole, in order, exactly where
// it should, that every close code reaches its client, and that the proxy
// gives back its goroutines, file descriptors and memory afterwards.
//
//	go run ./cmd/proxysoak                          # 15 minutes (make soak)
//	go run ./cmd/proxysoak -duration 30s            # a quick run
//	go run ./cmd/proxysoak -proxy-bin /tmp/proxy    # a proxy built elsewhere
//	go run ./cmd/proxysoak -addr 127.0.0.1:8080 -admin-token T -write-timeout 10s ...
//
// By default it builds ./cmd/proxy into a temporary directory and runs it on a
// free port of 127.0.0.1 with short timeouts and small buffers, so that the
// edge cases come often. Clients in several groups join and leave; members
// send text and binary messages from 0 B to a few MiB, whole or in fragments
// (each message starts with a header naming its group, sender id and
// connection, a per-connection sequence number, its length and a CRC-32C of
// its body); quiet clients only read; slow clients read at 0.5-3 MiB/s
// through a small socket buffer, so senders wait for them; stallers stop
// reading for a while, then resume or vanish. Members are kicked through the
// admin API, replaced by a second connection with the same id, cut at the TCP
// level, also in the middle of a message, stall in the middle of a message,
// and close with random codes.
//
// Checks, as messages arrive: every message is byte-exact and of the type
// sent, from the receiver's group, never from its own id, and its sequence
// number is above the last one from that sender connection. At the end:
//
//   - every message the proxy surely read (some receiver got it or a later
//     one from the same sender, or the sender's own close was echoed) reached
//     every receiver that was a member before it was written (its dial
//     returned -join-margin earlier) and kept reading for -slack after the
//     proxy had it, unless the proxy then closed that receiver with an
//     allowed code (1001, 1008, 4001, 4002, 4003); a receiver open until the
//     final close must have all of them (a miss between two received
//     messages is reported as a gap);
//   - a connection the proxy closed got a close frame with an allowed code:
//     a bare drop (1006) is a failure unless the client had stopped reading
//     for --write-timeout; 4001 only after a replacement, 4003 only after a
//     kick; a kick answered 204 closes the member; a replaced connection
//     ends within 5 s; a sender writing without pause is never closed for
//     "message stalled"; the final 1000 is echoed;
//   - after every client closed, wsproxy_connections is 0 and the proxy's
//     goroutines, open fds and heap (after a GC forced through pprof) are
//     back near the idle baseline; the proxy exits 0 on SIGTERM with no
//     panic in its log.
//
// Every failure is printed with the connections' ids, times and close codes
// (and all of them written to failures.txt in -out); the exit status is 1 if
// any check failed. Only loopback addresses are used, every loop is bounded,
// and about -clients connections are open at a time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errFailed):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "proxysoak:", err)
		os.Exit(2)
	}
}

// errFailed is returned by run when the soak ran to its end and a check
// failed; the failures have been printed.
var errFailed = errors.New("soak failed")

// config is one run's settings. The proxy settings are passed to the proxy
// the tool starts; with -addr they must describe the running proxy, since
// the checks derive their margins from them.
type config struct {
	duration time.Duration
	seed     uint64
	groups   int
	clients  int

	addr     string // a running proxy; empty: start one
	proxyBin string // a built proxy to start; empty: build ./cmd/proxy
	token    string // admin token
	pprof    string // base URL of the proxy's pprof listener (with -addr), for a forced GC
	outDir   string

	writeTimeout time.Duration
	idleTimeout  time.Duration
	pingInterval time.Duration
	pingTimeout  time.Duration
	bufferBytes  int64
	queueBytes   int64

	maxMsg     int64         // largest message sent, header included
	interval   time.Duration // mean pause between one sender's messages
	kickEvery  time.Duration // mean pause between kicks
	slack      time.Duration // how long a message may legitimately be in flight
	joinMargin time.Duration // how long after its dial returned a receiver surely is a member
	verbose    bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("proxysoak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.duration, "duration", 15*time.Minute, "how long the churn runs (checks and cleanup add up to about a minute)")
	fs.Uint64Var(&c.seed, "seed", 0, "seed for every random choice (0: from the clock; the run prints it)")
	fs.IntVar(&c.groups, "groups", 6, "number of groups")
	fs.IntVar(&c.clients, "clients", 60, "client slots: about this many connections are open at a time")
	fs.StringVar(&c.addr, "addr", "", "host:port of a running proxy on loopback (default: build and start one)")
	fs.StringVar(&c.proxyBin, "proxy-bin", "", "proxy binary to start (default: go build ./cmd/proxy)")
	fs.StringVar(&c.token, "admin-token", "soak-admin-token", "admin token (passed to the proxy the tool starts)")
	fs.StringVar(&c.pprof, "pprof", "", "with -addr: base URL of the proxy's pprof listener, to force a GC before heap readings")
	fs.StringVar(&c.outDir, "out", "", "directory for the proxy's log and the failure list (default: a new temporary directory)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 2*time.Second, "proxy --write-timeout")
	fs.DurationVar(&c.idleTimeout, "message-idle-timeout", 2*time.Second, "proxy --message-idle-timeout")
	fs.DurationVar(&c.pingInterval, "ping-interval", 2*time.Second, "proxy --ping-interval")
	fs.DurationVar(&c.pingTimeout, "ping-timeout", 2*time.Second, "proxy --ping-timeout")
	buffer := fs.String("buffer-bytes", "64KiB", "proxy --buffer-bytes")
	queue := fs.String("send-queue-bytes", "256KiB", "proxy --send-queue-bytes (small, so that receivers fill it often)")
	maxMsg := fs.String("max-message", "3MiB", "largest message a client sends")
	fs.DurationVar(&c.interval, "interval", 150*time.Millisecond, "mean pause between two messages of one sender")
	fs.DurationVar(&c.kickEvery, "kick-every", time.Second, "mean pause between two kicks")
	fs.DurationVar(&c.slack, "slack", 15*time.Second, "a message whose sender finished it this long before a receiver stopped reading must have reached it")
	fs.DurationVar(&c.joinMargin, "join-margin", 500*time.Millisecond, "a receiver is surely a member this long after its dial returned")
	fs.BoolVar(&c.verbose, "v", false, "print every connection's end")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.bufferBytes, err = parseSize(*buffer); err != nil {
		return c, fmt.Errorf("-buffer-bytes: %w", err)
	}
	if c.queueBytes, err = parseSize(*queue); err != nil {
		return c, fmt.Errorf("-send-queue-bytes: %w", err)
	}
	if c.maxMsg, err = parseSize(*maxMsg); err != nil {
		return c, fmt.Errorf("-max-message: %w", err)
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.groups < 1 || c.groups > 100:
		return c, errors.New("-groups must be 1-100")
	case c.clients < 2*c.groups || c.clients > 500:
		return c, errors.New("-clients must be at least 2 per group and at most 500")
	case c.maxMsg < 1024 || c.maxMsg > 64<<20:
		return c, errors.New("-max-message must be 1KiB-64MiB")
	case c.interval <= 0 || c.kickEvery <= 0:
		return c, errors.New("-interval and -kick-every must be positive")
	case c.addr != "" && c.proxyBin != "":
		return c, errors.New("-addr and -proxy-bin exclude each other")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c, nil
}

// parseSize reads 123, 64KiB, 1MiB, 1GiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a size such as 64KiB, got %q", s)
	}
	return n * mult, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.outDir == "" {
		if cfg.outDir, err = os.MkdirTemp("", "proxysoak-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		return err
	}
	failFile, err := os.Create(cfg.outDir + "/failures.txt")
	if err != nil {
		return err
	}
	defer failFile.Close()

	target, err := startTarget(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer target.stop()

	s := newSoak(cfg, target, stdout, failFile)
	s.logf("proxysoak: seed %d, %d groups, %d client slots, churn %v, proxy %s (%s), output in %s",
		cfg.seed, cfg.groups, cfg.clients, cfg.duration, target.addr, target.origin, cfg.outDir)
	s.logf("proxy settings: write-timeout %v, message-idle-timeout %v, ping %v/%v, buffer %s, send queue %s; slack %v, join margin %v",
		cfg.writeTimeout, cfg.idleTimeout, cfg.pingInterval, cfg.pingTimeout,
		sizeString(cfg.bufferBytes), sizeString(cfg.queueBytes), cfg.slack, cfg.joinMargin)
	s.soak(ctx)
	if s.report() {
		return nil
	}
	return errFailed
}
