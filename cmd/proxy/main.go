// Command proxy is the wsproxy server: a group-based WebSocket forwarder.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsproxy/wsproxy/internal/config"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel() // first signal: drain and exit 0
		<-sigs
		fmt.Fprintln(os.Stderr, "proxy: second signal, exiting now")
		os.Exit(1)
	}()

	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, os.Environ()...)
	switch {
	case err == nil: // also after a clean drain on the first signal
	case errors.Is(err, config.ErrHelp):
	case errors.Is(err, config.ErrInvalid):
		// Printed alone and last, so that it does not scroll away.
		fmt.Fprintf(os.Stderr, "proxy: %v\n(proxy --help lists every flag and its variable)\n", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}
