// Command natsserver runs nats-server with WebSocket enabled (no TLS) on a
// loopback address, as the peer system proxybench compares wsproxy with. It is
// a separate process so that /proc/<pid>/stat counts the server's CPU alone.
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
	host := flag.String("host", "127.0.0.1", "listen host for both the NATS and the WebSocket port")
	wsPort := flag.Int("ws-port", 0, "WebSocket port (required)")
	httpPort := flag.Int("http-port", 0, "monitoring port (/varz, /connz); 0: off")
	maxPayload := flag.Int("max-payload", 1<<20, "largest message, bytes")
	flag.Parse()
	if *wsPort == 0 {
		fmt.Fprintln(os.Stderr, "natsserver: -ws-port is required")
		os.Exit(2)
	}
	opts := &server.Options{
		Host:       *host,
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		HTTPHost:   *host,
		HTTPPort:   *httpPort,
		MaxPayload: int32(*maxPayload),
		Websocket: server.WebsocketOpts{
			Host:  *host,
			Port:  *wsPort,
			NoTLS: true,
		},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(1)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsserver: not ready after 10s")
		os.Exit(1)
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
}
