package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheckURLEnv is the variable `proxy healthcheck` reads its URL from.
const healthcheckURLEnv = "PROXY_HEALTHCHECK_URL"

// healthcheck requests /healthz and succeeds on 200. It needs no shell, so a
// FROM-scratch image can use it as its health check.
func healthcheck(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxy healthcheck", flag.ContinueOnError)
	fs.SetOutput(stdout)
	def := "http://127.0.0.1:8080/healthz"
	if v := getenv(healthcheckURLEnv); v != "" {
		def = v
	}
	url := fs.String("url", def, "health endpoint to request [PROXY_HEALTHCHECK_URL]")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", *url, resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
