package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/wsproxy/wsproxy/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// checkLeaks fails t if goroutines started during the test are still running
// after everything else in its cleanup (registered first, so it runs last).
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logEntry returns the first JSON log line with message msg.
func logEntry(logs, msg string) (map[string]any, bool) {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil && e["message"] == msg {
			return e, true
		}
	}
	return nil, false
}

// waitFor polls cond every few milliseconds until it is true or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// httpClient keeps no idle connections, so no goroutine outlives a request.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// proxy is run() going in this process.
type proxy struct {
	addr   string // the resolved listen address, host:port
	stdout *syncBuffer
	stderr *syncBuffer // JSON log lines
	cancel context.CancelFunc
	done   chan error // receives run's result
}

// startProxy calls run with args and the environment vars, and waits for the
// startup log line. The proxy is stopped when the test ends, if the test has
// not stopped it.
func startProxy(t *testing.T, args []string, vars map[string]string) *proxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proxy{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, args, env(vars), p.stdout, p.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return after cancel")
		}
	})

	deadline := time.After(10 * time.Second)
	for {
		if e, ok := logEntry(p.stderr.String(), "proxy listening"); ok {
			p.addr, _ = e["addr"].(string)
			if p.addr == "" {
				t.Fatalf("startup line has no addr: %v", e)
			}
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("run returned %v before listening; logs:\n%s", err, p.stderr)
		case <-deadline:
			t.Fatalf("no startup line; logs:\n%s", p.stderr)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// stop cancels run's context and returns its result.
func (p *proxy) stop(t *testing.T) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
		return nil
	}
}

// get requests http://addr/path and returns the status and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 10*time.Second, "/readyz to answer 200", func() bool {
		code, _ := get(t, addr, "/readyz")
		return code == http.StatusOK
	})
}

// metric returns the value of one sample from /metrics, such as
// `wsproxy_connections` or `wsproxy_messages_in_total{type="text"}`.
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	_, body := get(t, addr, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

func waitMetric(t *testing.T, addr, sample string, cond func(float64) bool, what string) {
	t.Helper()
	waitFor(t, 10*time.Second, sample+" "+what, func() bool { return cond(metric(t, addr, sample)) })
}

// dial connects a WebSocket client to the proxy at addr.
func dial(t testing.TB, addr, id, group string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws?id="+url.QueryEscape(id)+"&groupName="+url.QueryEscape(group),
		&websocket.DialOptions{HTTPClient: httpClient})
	if err != nil {
		t.Fatalf("dial %s/%s: %v", group, id, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func send(t testing.TB, c *websocket.Conn, typ websocket.MessageType, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func receive(t testing.TB, c *websocket.Conn) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, b
}

// closeOf reads c until it ends and returns the close frame it got, or the
// error it ended with if there was none.
func closeOf(c *websocket.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

// isGoingAway reports whether err is a close frame with 1001 "going away".
func isGoingAway(err error) bool {
	var ce websocket.CloseError
	return errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway && ce.Reason == "going away"
}

// upgradeStatus sends a valid WebSocket handshake and returns the status and
// body of a refusal (or 101).
func upgradeStatus(t *testing.T, addr, rawQuery string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/ws?"+rawQuery, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// backlogMsg is the i-th message of sendBacklog: 256 KiB starting with i.
func backlogMsg(i int) []byte {
	m := bytes.Repeat([]byte{byte(i)}, 256<<10)
	binary.BigEndian.PutUint32(m, uint32(i))
	return m
}

// sendBacklog sends n backlog messages from a client whose group peer is not
// reading, and waits until the proxy has read them all and holds some of them
// in its queue (n = 64 is more than loopback socket buffers take, and needs a
// --send-queue-bytes above 16MiB): a drain must now wait for that peer.
func sendBacklog(t *testing.T, addr string, from *websocket.Conn, n int) {
	t.Helper()
	const sample = `wsproxy_messages_in_total{type="binary"}`
	base := metric(t, addr, sample)
	for i := range n {
		send(t, from, websocket.MessageBinary, backlogMsg(i))
	}
	waitMetric(t, addr, sample, func(v float64) bool { return v == base+float64(n) }, "to count every message")
	waitMetric(t, addr, "wsproxy_queued_bytes", func(v float64) bool { return v > 0 }, "> 0")
}

// TestRunForwardsAndDrains runs the whole program: it forwards between real
// clients; on cancel it turns not-ready, refuses new connections with 503
// while messages queued before the cancel are still being delivered, delivers
// every one of them, closes the clients with 1001, returns nil, and leaves no
// goroutine behind.
func TestRunForwardsAndDrains(t *testing.T) {
	checkLeaks(t)
	p := startProxy(t, []string{
		"--addr", "127.0.0.1:0", "--log-format", "json",
		"--send-queue-bytes", "64MiB", "--write-timeout", "1m", "--shutdown-timeout", "1m",
	}, nil)
	waitReady(t, p.addr)
	if code, body := get(t, p.addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	a := dial(t, p.addr, "alice", "room")
	b := dial(t, p.addr, "bob", "room")
	waitMetric(t, p.addr, "wsproxy_connections", func(v float64) bool { return v == 2 }, "== 2")

	send(t, a, websocket.MessageText, []byte("hello bob"))
	if typ, got := receive(t, b); typ != websocket.MessageText || string(got) != "hello bob" {
		t.Fatalf("bob got %v %q", typ, got)
	}
	send(t, b, websocket.MessageBinary, []byte{0, 1, 2, 255})
	if typ, got := receive(t, a); typ != websocket.MessageBinary || !bytes.Equal(got, []byte{0, 1, 2, 255}) {
		t.Fatalf("alice got %v %v", typ, got)
	}

	// Bob stops reading while Alice sends more than the sockets' buffers can
	// hold, so most of it waits in the proxy's queue for Bob.
	const n = 64
	sendBacklog(t, p.addr, a, n)

	aliceEnd := make(chan error, 1)
	go func() { aliceEnd <- closeOf(a, 20*time.Second) }()
	p.cancel()

	// Draining: Bob's queue holds the drain open until he reads.
	waitFor(t, 10*time.Second, "/readyz to answer 503", func() bool {
		code, _ := get(t, p.addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if code, body := get(t, p.addr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %s", code, body)
	}
	if code, body := upgradeStatus(t, p.addr, "id=carol&groupName=room"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"error"`) {
		t.Errorf("new /ws while draining: %d %s, want 503 with a JSON error", code, body)
	}
	if code, _ := get(t, p.addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200 while the process runs", code)
	}
	select {
	case err := <-p.done:
		t.Fatalf("run returned %v while messages were still queued", err)
	default:
	}

	for i := range n {
		typ, got := receive(t, b)
		if typ != websocket.MessageBinary || !bytes.Equal(got, backlogMsg(i)) {
			t.Fatalf("bob's message %d after the cancel: %v, %d bytes, first %x", i, typ, len(got), got[:min(4, len(got))])
		}
	}
	if err := closeOf(b, 10*time.Second); !isGoingAway(err) {
		t.Errorf("bob's connection ended with %v, want 1001 going away", err)
	}
	if err := <-aliceEnd; !isGoingAway(err) {
		t.Errorf("alice's connection ended with %v, want 1001 going away", err)
	}

	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	logs := p.stderr.String()
	for _, msg := range []string{"shutting down: draining", "shutdown complete"} {
		if _, ok := logEntry(logs, msg); !ok {
			t.Errorf("no %q log line", msg)
		}
	}
	if e, ok := logEntry(logs, "shutdown timeout reached with messages still queued"); ok {
		t.Errorf("the drain timed out: %v", e)
	}
}

// TestRunIdleShutdown: with nothing queued, cancel closes the clients with
// 1001 at once and run returns nil well within the shutdown timeout.
func TestRunIdleShutdown(t *testing.T) {
	checkLeaks(t)
	p := startProxy(t, []string{"--addr=127.0.0.1:0", "--log-format=json", "--shutdown-timeout=1m"}, nil)
	waitReady(t, p.addr)
	c := dial(t, p.addr, "solo", "g")
	waitMetric(t, p.addr, "wsproxy_connections", func(v float64) bool { return v == 1 }, "== 1")
	end := make(chan error, 1)
	go func() { end <- closeOf(c, 10*time.Second) }()
	start := time.Now()
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("shutdown took %v: it waited for the shutdown timeout", d)
	}
	if err := <-end; !isGoingAway(err) {
		t.Errorf("client's connection ended with %v, want 1001 going away", err)
	}
}

// TestRunEnvAndFlags: every setting can come from the environment, a flag
// wins over its variable, and the startup line shows the effective settings
// (without the admin token itself).
func TestRunEnvAndFlags(t *testing.T) {
	checkLeaks(t)
	p := startProxy(t, []string{"--slow-consumer=backpressure", "--ping-interval", "7s"}, map[string]string{
		"PROXY_ADDR":             "127.0.0.1:0",
		"PROXY_LOG_FORMAT":       "json",
		"PROXY_SEND_QUEUE_BYTES": "16MiB",
		"PROXY_BUFFER_BYTES":     "65536",
		"PROXY_SLOW_CONSUMER":    "disconnect",
		"PROXY_PING_INTERVAL":    "5s",
		"PROXY_ALLOWED_ORIGINS":  "*.example.com,https://app.example.org",
		"PROXY_ADMIN_TOKEN":      "zq9-not-for-logs",
	})
	e, _ := logEntry(p.stderr.String(), "proxy listening")
	if !strings.HasPrefix(p.addr, "127.0.0.1:") {
		t.Errorf("addr %q: PROXY_ADDR not applied", p.addr)
	}
	want := map[string]any{
		"send_queue_bytes":  "16MiB",        // environment
		"buffer_bytes":      "64KiB",        // environment
		"max_message_bytes": "0",            // default
		"slow_consumer":     "backpressure", // flag over environment
		"ping_interval":     "7s",           // flag over environment
		"write_timeout":     "10s",          // default
		"admin_token":       true,
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("startup line %s = %v (%T), want %v", k, e[k], e[k], v)
		}
	}
	if got := fmt.Sprint(e["allowed_origins"]); got != "[*.example.com https://app.example.org]" {
		t.Errorf("allowed_origins = %s", got)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(p.stderr.String(), "zq9-not-for-logs") {
		t.Error("the admin token appears in the logs")
	}
}

// TestRunInvalidConfig: a bad flag or variable makes run return at once with
// an error naming it, before listening.
func TestRunInvalidConfig(t *testing.T) {
	checkLeaks(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "-bogus"},
		{"bad size", []string{"--send-queue-bytes=lots"}, nil, "send-queue-bytes"},
		{"bad size in env", nil, map[string]string{"PROXY_SEND_QUEUE_BYTES": "lots"}, "PROXY_SEND_QUEUE_BYTES"},
		{"bad duration in env", nil, map[string]string{"PROXY_WRITE_TIMEOUT": "soon"}, "PROXY_WRITE_TIMEOUT"},
		{"bad policy", []string{"--slow-consumer=drop"}, nil, "slow-consumer"},
		{"bad log level", []string{"--log-level=loud"}, nil, "log-level"},
		{"bad log level in env", nil, map[string]string{"PROXY_LOG_LEVEL": "loud"}, "PROXY_LOG_LEVEL"},
		{"bad log format", []string{"--log-format=xml"}, nil, "log-format"},
		{"negative timeout", []string{"--shutdown-timeout=-1s"}, nil, "shutdown-timeout"},
		{"bad port", []string{"--addr=127.0.0.1:99999"}, nil, "listen"},
		{"address in use", []string{"--addr=" + busy.Addr().String()}, nil, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			errc := make(chan error, 1)
			go func() { errc <- run(context.Background(), tt.args, env(tt.env), &stdout, &stderr) }()
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("run error %v, want one mentioning %q", err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("run did not return: it started serving")
			}
			if strings.Contains(stderr.String(), "proxy listening") {
				t.Error("run logged that it was listening")
			}
		})
	}
}

// TestRunHelp compares --help with testdata/help.golden (go test -update
// rewrites it), and checks on its own that every flag is listed with its
// variable and default.
func TestRunHelp(t *testing.T) {
	var stdout, stderr syncBuffer
	err := run(context.Background(), []string{"--help"}, env(nil), &stdout, &stderr)
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("run(--help) = %v, want config.ErrHelp (main exits 0)", err)
	}
	got := stdout.String()
	golden := filepath.Join("testdata", "help.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("--help differs from %s (go test -update to accept):\n got:\n%s\nwant:\n%s", golden, got, want)
	}

	// SPEC section 7 and the README's table.
	flags := map[string]string{
		"addr":                 `(default ":8080")`,
		"log-level":            `(default "info")`,
		"log-format":           "console on a terminal, json otherwise",
		"max-message-bytes":    `(default "0")`,
		"buffer-bytes":         `(default "1MiB")`,
		"message-idle-timeout": `(default "30s")`,
		"send-queue-bytes":     `(default "8MiB")`,
		"slow-consumer":        `(default "backpressure")`,
		"write-timeout":        `(default "10s")`,
		"ping-interval":        `(default "30s")`,
		"ping-timeout":         `(default "10s")`,
		"shutdown-timeout":     `(default "10s")`,
		"allowed-origins":      "(default: none)",
		"admin-token":          "(default: none)",
		// SPEC section 10.
		"max-groups":            `(default "0")`,
		"max-members-per-group": `(default "0")`,
		"message-rate":          `(default "0")`,
		"message-burst":         "(default: one second's worth)",
		"byte-rate":             `(default "0")`,
		"byte-burst":            "(default: one second's worth, at least 64KiB)",
		"rate-limit-action":     `(default "throttle")`,
		"memory-limit":          "(default: half of the machine's or container's memory)",
		// SPEC section 10: connection admission.
		"max-connections":        "(default: derived from the descriptor limit",
		"max-connections-per-ip": `(0: no limit) (default "0")`,
		"connect-rate-per-ip":    `(0: no limit) (default "0")`,
		"connect-burst-per-ip":   `(default "0")`,
		"trusted-proxies":        "(default: none",
		// SPEC section 9
		"auth":                     `(default "none")`,
		"jwt-secret-file":          "(default: none)",
		"jwt-previous-secret-file": "(default: none)",
		"jwt-public-key-file":      "(default: none)",
		"jwt-audience":             "(default: none)",
		"jwt-issuer":               "(default: none)",
		"admin-token-file":         "(default: none)",
		"tls-cert-file":            "(default: none)",
		"tls-key-file":             "(default: none)",
		// SPEC section 12
		"nats-url":             "(default: none)",
		"cluster-name":         `(default "wsproxy")`,
		"node-name":            "(default: the host name)",
		"cluster-heartbeat":    `(default "1s")`,
		"cluster-peer-timeout": `(default "6s")`,
		"bus-chunk-bytes":      `(default "128KiB")`,
		"bus-window-bytes":     `(default "1MiB")`,
	}
	for flag, def := range flags {
		head := fmt.Sprintf("--%s [%s]\n", flag, config.EnvName(flag))
		i := strings.Index(got, head)
		if i < 0 {
			t.Errorf("--help does not list %q", strings.TrimSpace(head))
			continue
		}
		usage, _, _ := strings.Cut(got[i+len(head):], "\n")
		if !strings.Contains(usage, def) {
			t.Errorf("--%s: usage %q lacks its default %s", flag, usage, def)
		}
	}
	if n := strings.Count(got, "\n  --"); n != len(flags) {
		t.Errorf("--help lists %d flags, want the %d above", n, len(flags))
	}
}

// TestRunHealthcheck: the healthcheck subcommand succeeds against a running
// proxy and fails against a port where nothing listens.
func TestRunHealthcheck(t *testing.T) {
	checkLeaks(t)
	p := startProxy(t, []string{"--addr=127.0.0.1:0", "--log-format=json"}, nil)
	var stdout, stderr syncBuffer
	if err := run(context.Background(), []string{"healthcheck", "--url", "http://" + p.addr + "/healthz"}, env(nil), &stdout, &stderr); err != nil {
		t.Fatalf("healthcheck against the proxy: %v", err)
	}
	if strings.TrimSpace(stdout.String()) != "ok" {
		t.Errorf("healthcheck printed %q", stdout.String())
	}
	// The URL may come from the environment too.
	err := run(context.Background(), []string{"healthcheck"}, env(map[string]string{"PROXY_HEALTHCHECK_URL": "http://" + p.addr + "/healthz"}), io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("healthcheck with PROXY_HEALTHCHECK_URL: %v", err)
	}
	if err := run(context.Background(), []string{"healthcheck", "--url", "http://" + p.addr + "/nope"}, env(nil), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("healthcheck of a 404: %v, want an error naming the status", err)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"healthcheck", "--url", "http://" + p.addr + "/healthz", "--timeout", "2s"}, env(nil), io.Discard, io.Discard)
	if err == nil {
		t.Error("healthcheck succeeded against a stopped proxy")
	}
}
