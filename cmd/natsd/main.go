// Command natsd is the NATS server of the wsproxy cluster: nats-server
// embedded with the settings the proxies need (JetStream on, for the KV
// buckets of the members registry and the stream placement lease), so that
// the cluster's compose profile can build its NATS image from source, FROM
// scratch, as it builds the proxy's.
//
//	natsd [flags]             serve until SIGINT or SIGTERM, then exit 0
//	natsd healthcheck [flags] GET the monitoring port's /healthz; exit 0 on 200
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
}
