package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// setHTTPLimits shortens the HTTP server's own limits for one test (the
// tests that call it are not parallel) and restores them after.
func setHTTPLimits(t *testing.T, header time.Duration, idle time.Duration) {
	t.Helper()
	oldHeader, oldIdle := readHeaderTimeout, idleTimeout
	readHeaderTimeout, idleTimeout = header, idle
	t.Cleanup(func() { readHeaderTimeout, idleTimeout = oldHeader, oldIdle })
}

// A client that sends its request head slowly (slowloris), however steadily,
// is cut after the header read timeout: many of them at once hold nothing.
func TestHTTPHeaderTimeout(t *testing.T) {
	setHTTPLimits(t, 500*time.Millisecond, 2*time.Minute)
	p := startProc(t)
	const clients = 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- slowloris(p.addr(), i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("cut after %v, before the header timeout", d)
	}
}

// slowloris sends a WebSocket handshake one header line every 50 ms and
// reports an error unless the server closes the connection within 5 s.
func slowloris(addr string, i int) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := fmt.Fprintf(nc, "GET /ws?id=s%d&groupName=g HTTP/1.1\r\nHost: %s\r\n", i, addr); err != nil {
		return err
	}
	closed := make(chan error, 1)
	go func() {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, nc)
		closed <- err
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("slow client %d still connected after 5 s", i)
			}
			return nil // EOF or reset: cut
		case <-tick.C:
			_, _ = fmt.Fprintf(nc, "X-Slow-%d: x\r\n", n) // fails once cut
		}
	}
}

// A request head over the size limit gets 431; one under it is served.
func TestHTTPMaxHeaderBytes(t *testing.T) {
	p := startProc(t)
	get := func(headerBytes int) int {
		req, err := http.NewRequest(http.MethodGet, p.base+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Big", strings.Repeat("a", headerBytes))
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET with a %d-byte header: %v", headerBytes, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(12 << 10); got != http.StatusOK {
		t.Errorf("12 KiB header: status %d, want 200", got)
	}
	// net/http allows 4 KiB beyond MaxHeaderBytes.
	if got := get(maxHeaderBytes + 5<<10); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("%d-byte header: status %d, want 431", maxHeaderBytes+5<<10, got)
	}
}

// A keep-alive connection that sends no further request is closed after
// the idle timeout.
func TestHTTPIdleTimeout(t *testing.T) {
	setHTTPLimits(t, 10*time.Second, 300*time.Millisecond)
	p := startProc(t)
	nc, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	for range 2 { // the connection is kept alive between requests
		if _, err := fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", p.addr()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("status %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	start := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("idle keep-alive connection still open after 5 s")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout (%v)", d, err)
	}
}

// A flood of connections over --max-connections is refused with 503 before
// the upgrade, and /healthz, /metrics and the admin API keep answering
// promptly; the refusals are counted and logged at most once a second.
func TestFloodMaxConnections(t *testing.T) {
	const maxConns, token = 50, "tok"
	p := startProc(t, "--max-connections", strconv.Itoa(maxConns), "--admin-token", token)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var mu sync.Mutex
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	var refused atomic.Int64
	// dial opens one connection and reports whether it was admitted; a
	// refusal must be 503 with Retry-After and a JSON body.
	dial := func(i int) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, fmt.Sprintf("%s?id=u%d&groupName=flood", p.ws(), i),
			&websocket.DialOptions{HTTPClient: client})
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			return true, nil
		}
		if resp == nil {
			return false, err
		}
		b, _ := io.ReadAll(resp.Body)
		var body struct{ Error string }
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" ||
			json.Unmarshal(b, &body) != nil || body.Error == "" {
			return false, fmt.Errorf("refusal: status %d, Retry-After %q, body %q", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		refused.Add(1)
		return false, nil
	}

	admitted := 0
	for i := range maxConns + 10 {
		ok, err := dial(i)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			admitted++
		}
	}
	if admitted != maxConns || refused.Load() != 10 {
		t.Fatalf("%d admitted, %d refused; want %d and 10", admitted, refused.Load(), maxConns)
	}

	// Keep flooding while the other endpoints are asked.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if ok, err := dial(1000*(g+1) + i); ok || err != nil {
					t.Errorf("flood dial: admitted %v, %v", ok, err)
					return
				}
			}
		}()
	}
	floodStart := time.Now()
	var slowest time.Duration
	for time.Since(floodStart) < 1500*time.Millisecond {
		for _, path := range []string{"/healthz", "/metrics", "/api/groups"} {
			begin := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("GET %s during the flood: %v", path, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s during the flood: %d", path, resp.StatusCode)
			}
			slowest = max(slowest, time.Since(begin))
		}
	}
	close(stop)
	wg.Wait()
	floodTime := time.Since(floodStart)
	t.Logf("%d refused; slowest /healthz, /metrics or /api answer during the flood: %v", refused.Load(), slowest)

	fams := scrape(t, p)
	if got := value(fams, "wsproxy_handshake_rejections_total", "reason=max_connections"); got != float64(refused.Load()) {
		t.Errorf("rejections{reason=max_connections} = %v, want %d", got, refused.Load())
	}
	if got := value(fams, "wsproxy_connections", ""); got != maxConns {
		t.Errorf("wsproxy_connections = %v, want %d", got, maxConns)
	}
	if got := value(fams, "wsproxy_admitted_connections", ""); got != maxConns {
		t.Errorf("wsproxy_admitted_connections = %v, want %d", got, maxConns)
	}

	// One log line per second at most, carrying the count suppressed.
	var lines, suppressed int
	for _, l := range strings.Split(p.logText(), "\n") {
		var e struct {
			Message, Reason string
			Suppressed      int
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "connection refused" {
			lines++
			suppressed += e.Suppressed
			if e.Reason != "max_connections" {
				t.Errorf("refusal logged with reason %q", e.Reason)
			}
		}
	}
	if limit := int(floodTime/time.Second) + 3; lines < 1 || lines > limit {
		t.Errorf("%d refusal log lines for %d refusals in %v, want 1-%d", lines, refused.Load(), floodTime, limit)
	}
	if int64(lines+suppressed) > refused.Load() || (refused.Load() > int64(lines) && lines > 1 && suppressed == 0) {
		t.Errorf("%d lines with %d suppressed for %d refusals", lines, suppressed, refused.Load())
	}
}

// testBinaryFloodAtDescriptorLimit runs the proxy with a descriptor limit of
// 256 and no --max-connections: the default (256 - 64 = 192) refuses the
// connections beyond it with 503, and /healthz, /metrics and the admin API
// still answer, where without it the process ran out of descriptors and
// stopped answering anything.
func testBinaryFloodAtDescriptorLimit(t *testing.T, bin string) {
	const fdLimit, want, token = 256, 192, "tok"
	p := startBinary(t, "/bin/sh", []string{"-c", `ulimit -n ` + strconv.Itoa(fdLimit) + ` && exec "$0" "$@"`,
		bin, "--addr", "127.0.0.1:0", "--log-format", "json", "--admin-token", token})
	e, _ := logEntry(p.stderr.String(), "proxy listening")
	if got, _ := e["max_connections"].(float64); got != want {
		t.Fatalf("startup line: max_connections %v, want %d (descriptor limit %d minus 64)", e["max_connections"], want, fdLimit)
	}
	base := "http://" + p.addr

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	refused := 0
	for i := range fdLimit {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?id=u%d&groupName=flood", p.addr, i),
			&websocket.DialOptions{HTTPClient: client})
		cancel()
		switch {
		case err == nil:
			conns = append(conns, c)
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("connection %d (%d open): %v", i, len(conns), err)
		}
	}
	if len(conns) != want || refused != fdLimit-want {
		t.Fatalf("%d admitted, %d refused; want %d and %d", len(conns), refused, want, fdLimit-want)
	}
	for _, path := range []string{"/healthz", "/metrics", "/api/groups"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := httpClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET %s with %d connections open: %v", path, len(conns), err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	for _, c := range conns {
		c.CloseNow()
	}
	conns = nil
	tr.CloseIdleConnections()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM; stderr:\n%s", code, p.stderr)
	}
}
