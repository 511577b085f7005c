package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheck requests nats-server's /healthz, which answers 200 only when
// the server accepts connections and JetStream is up, and succeeds on 200.
// It needs no shell, so a FROM-scratch image can use it as its health check.
func healthcheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("natsd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stdout)
	target := fs.String("url", "http://127.0.0.1:8222/healthz", "health endpoint to request")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(*target)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d: %s", *target, resp.StatusCode, body)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
