package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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
	target := fs.String("url", def, "health endpoint to request [PROXY_HEALTHCHECK_URL]")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	if u, err := url.Parse(*target); err == nil && u.Scheme == "https" && isLoopbackHost(u.Hostname()) {
		// The proxy's own certificate is not issued for the loopback
		// address; a health check sends nothing secret.
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
	}
	resp, err := client.Get(*target)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", *target, resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
