package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsproxy/wsproxy/internal/config"
)

// errUsage matches (errors.Is) every error about the command line.
var errUsage = errors.New("usage")

// readyTimeout bounds how long the server may take to accept connections.
const readyTimeout = 30 * time.Second

// run is the whole program: it serves until ctx is cancelled, then shuts
// the server down and returns nil. Once the server accepts connections it
// prints one line on stdout, "ready <client URL> <monitoring URL>"; the
// server's log goes to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], stdout)
	}
	opts, err := parse(args, stdout)
	if err != nil {
		return err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	logger := newLogger(stderr, opts.Debug)
	s.SetLoggerV2(logger, opts.Debug, false, false)

	s.Start()
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	// A port that cannot be opened is a Fatalf from Start's listeners:
	// stop waiting then rather than after readyTimeout.
	deadline := time.Now().Add(readyTimeout)
	for !s.ReadyForConnections(100 * time.Millisecond) {
		if err := logger.fatalErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting connections after %v", readyTimeout)
		}
	}
	if !s.JetStreamEnabled() {
		return errors.New("JetStream did not start")
	}
	monitor := "-"
	if a := s.MonitorAddr(); a != nil {
		monitor = "http://" + a.String()
	}
	fmt.Fprintln(stdout, "ready", s.ClientURL(), monitor)

	select {
	case <-ctx.Done():
		s.Noticef("Signal received: shutting down")
		return nil
	case <-logger.fatal:
		return logger.fatalErr()
	}
}

// parse turns the command line into the server's options.
func parse(args []string, usage io.Writer) (*server.Options, error) {
	fs := flag.NewFlagSet("natsd", flag.ContinueOnError)
	fs.SetOutput(usage)
	host := fs.String("host", "0.0.0.0", "address the client and monitoring ports listen on")
	port := fs.Int("port", 4222, "client port (-1: a random free port)")
	httpPort := fs.Int("http-port", 8222, "monitoring port, /healthz and /varz (-1: a random free port; 0: off)")
	name := fs.String("server-name", "", "server name, shown in /varz and the log (default: a generated id)")
	storeDir := fs.String("store-dir", "/tmp/natsd", "JetStream's directory (the image mounts a tmpfs there)")
	maxPayload := sizeFlag(fs, "max-payload", 1<<20, "largest message a client may publish, such as 1MiB (nats-server's max_payload)")
	maxMemory := sizeFlag(fs, "js-max-memory", 256<<20, "JetStream memory storage limit, such as 256MiB")
	maxFile := sizeFlag(fs, "js-max-file", 64<<20, "JetStream file storage limit, such as 64MiB (the proxies keep their buckets in memory)")
	pingInterval := fs.Duration("ping-interval", 20*time.Second, "how often the server pings an idle client")
	maxPings := fs.Int("max-pings", 2, "pings a client may leave unanswered before it is disconnected")
	debug := fs.Bool("debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	case *maxPayload < 1 || *maxPayload > server.MAX_PENDING_SIZE:
		// A client's pending bytes (max_pending) must hold a whole message.
		return nil, fmt.Errorf("%w: -max-payload must be 1 to %s", errUsage, config.FormatSize(server.MAX_PENDING_SIZE))
	case *maxMemory < 1 || *maxFile < 1:
		return nil, fmt.Errorf("%w: -js-max-memory and -js-max-file must be at least 1 byte", errUsage)
	case *pingInterval <= 0 || *maxPings < 1:
		return nil, fmt.Errorf("%w: -ping-interval must be positive and -max-pings at least 1", errUsage)
	}
	return &server.Options{
		ServerName:         *name,
		Host:               *host,
		Port:               *port,
		HTTPHost:           *host,
		HTTPPort:           *httpPort,
		MaxPayload:         int32(*maxPayload),
		PingInterval:       *pingInterval,
		MaxPingsOut:        *maxPings,
		JetStream:          true,
		StoreDir:           *storeDir,
		JetStreamMaxMemory: *maxMemory,
		JetStreamMaxStore:  *maxFile,
		Debug:              *debug,
		NoSigs:             true, // run owns the signals
	}, nil
}

// sizeFlag defines a flag holding a byte count written as config.ParseSize
// reads it (1048576, 1MiB).
func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *int64 {
	v := def
	fs.Func(name, fmt.Sprintf("%s (default %s)", usage, config.FormatSize(def)), func(s string) error {
		n, err := config.ParseSize(s)
		if err != nil {
			return err
		}
		v = n
		return nil
	})
	return &v
}

// logger is nats-server's Logger writing lines as nats-server's own does
// ("[INF] ...") to any writer, so that tests can read them. A Fatalf does
// not exit the process: it ends run with the message as its error.
type logger struct {
	log   *log.Logger
	debug bool

	once  sync.Once
	fatal chan struct{} // closed by the first Fatalf
	err   error         // set before fatal is closed
}

func newLogger(w io.Writer, debug bool) *logger {
	return &logger{
		log:   log.New(w, "", log.LstdFlags|log.Lmicroseconds|log.LUTC),
		debug: debug,
		fatal: make(chan struct{}),
	}
}

func (l *logger) Noticef(format string, v ...any) { l.log.Printf("[INF] "+format, v...) }
func (l *logger) Warnf(format string, v ...any)   { l.log.Printf("[WRN] "+format, v...) }
func (l *logger) Errorf(format string, v ...any)  { l.log.Printf("[ERR] "+format, v...) }
func (l *logger) Tracef(format string, v ...any)  {}

func (l *logger) Debugf(format string, v ...any) {
	if l.debug {
		l.log.Printf("[DBG] "+format, v...)
	}
}

func (l *logger) Fatalf(format string, v ...any) {
	l.log.Printf("[FTL] "+format, v...)
	l.once.Do(func() {
		l.err = fmt.Errorf(format, v...)
		close(l.fatal)
	})
}

// fatalErr is the first Fatalf's message, or nil if there was none.
func (l *logger) fatalErr() error {
	select {
	case <-l.fatal:
		return l.err
	default:
		return nil
	}
}
