// Command natsserver runs nats-server on a loopback address for proxybench,
// in one of two roles: with WebSocket enabled (no TLS), the peer system the
// fan-out workloads compare wsproxy with; or with JetStream on a memory store,
// the bus of a wsproxy cluster (the cluster workloads point every proxy's
// --nats-url at its client port). It is a separate process so that
// /proc/<pid>/stat counts the server's CPU alone.
//
// It prints "ready" on stdout once it accepts connections and exits when its
// standard input closes or on SIGINT/SIGTERM.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(1)
	}
}

func run() error {
	host := flag.String("host", "127.0.0.1", "listen host for every port")
	port := flag.Int("port", server.RANDOM_PORT, "NATS client port (-1: any free port)")
	wsPort := flag.Int("ws-port", 0, "WebSocket port; 0: no WebSocket listener")
	httpPort := flag.Int("http-port", 0, "monitoring port (/varz, /connz); 0: off")
	maxPayload := flag.Int("max-payload", 1<<20, "largest message, bytes")
	jetstream := flag.Bool("jetstream", false, "enable JetStream (what a wsproxy cluster needs for its KV buckets)")
	jsMem := flag.Int64("js-max-mem", 256<<20, "JetStream memory store limit, bytes")
	flag.Parse()
	if *wsPort == 0 && !*jetstream {
		return fmt.Errorf("set -ws-port (the NATS comparison) or -jetstream (a cluster's bus)")
	}
	opts := &server.Options{
		Host:       *host,
		Port:       *port,
		NoLog:      true,
		NoSigs:     true,
		HTTPHost:   *host,
		HTTPPort:   *httpPort,
		MaxPayload: int32(*maxPayload),
	}
	if *wsPort != 0 {
		opts.Websocket = server.WebsocketOpts{Host: *host, Port: *wsPort, NoTLS: true}
	}
	if *jetstream {
		// The cluster keeps its buckets in memory; a store directory is
		// still required, so it is a temporary one, removed on exit.
		dir, err := os.MkdirTemp("", "natsserver-js-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		opts.JetStream = true
		opts.JetStreamMaxMemory = *jsMem
		opts.StoreDir = dir
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("not ready after 10s")
	}
	fmt.Println("ready")

	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-stop:
	case <-sigs:
	}
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
