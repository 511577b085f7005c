package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/limits"
	"github.com/wsproxy/wsproxy/internal/session"
)

// dialFrom opens a real WebSocket connection from the loopback source
// address src (any of 127.0.0.0/8), with extra request headers. On a
// refusal it returns the response (its body holds the first KiB).
func dialFrom(t testing.TB, ts *testServer, src, id, group string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections() // a refused dial's connection would stay idle
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(ts.url, id, group), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: hdr,
	})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// mustDialFrom is dialFrom that must succeed, and waits for the membership.
func mustDialFrom(t testing.TB, ts *testServer, src, id, group string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := dialFrom(t, ts, src, id, group, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial from %s as %s: %v (status %d)", src, id, err, status)
	}
	waitMember(t, ts, group, id)
	return c
}

// expectRefused dials from src and asserts the refusal: status, JSON body,
// Retry-After within [minRetry, maxRetry] seconds, and the metric counted
// under reason.
func expectRefused(t testing.TB, ts *testServer, src string, hdr http.Header, status int, reason string, minRetry, maxRetry int) {
	t.Helper()
	before := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason="+reason)
	c, resp, err := dialFrom(t, ts, src, "refused", "g-refused", hdr)
	if err == nil {
		c.CloseNow()
		t.Fatalf("dial from %s admitted, want %d %s", src, status, reason)
	}
	if resp == nil {
		t.Fatalf("dial from %s: %v, no response", src, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("dial from %s: status %d, want %d", src, resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < minRetry || ra > maxRetry {
		t.Errorf("Retry-After %q, want %d-%d seconds", resp.Header.Get("Retry-After"), minRetry, maxRetry)
	}
	b, _ := io.ReadAll(resp.Body)
	var body struct{ Error string }
	if err := json.Unmarshal(b, &body); err != nil || body.Error == "" {
		t.Errorf("body %q is not a JSON error", b)
	}
	if after := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason="+reason); after != before+1 {
		t.Errorf("rejections{reason=%s} went %v -> %v, want +1", reason, before, after)
	}
}

// closeAndWaitOpen closes c and waits until the server holds want admitted
// connections (the slot is freed when the connection's goroutine ends).
func closeAndWaitOpen(t testing.TB, ts *testServer, c *websocket.Conn, want int) {
	t.Helper()
	c.Close(websocket.StatusNormalClosure, "")
	waitOpen(t, ts, want)
}

func waitOpen(t testing.TB, ts *testServer, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ts.admit.Open() != want {
		if time.Now().After(deadline) {
			t.Fatalf("admitted connections = %d, want %d", ts.admit.Open(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAdmissionOffByDefault(t *testing.T) {
	ts := startServer(t)
	if ts.admit != nil {
		t.Fatal("admission built with every limit off")
	}
	for i := range 5 {
		mustDialFrom(t, ts, "127.0.0.2", fmt.Sprint("u", i), "g", nil)
	}
}

func TestAdmissionMaxConnections(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.Admission.MaxConnections = 3 })
	var cs []*websocket.Conn
	for i := range 3 {
		// From different addresses: the limit is process-wide.
		cs = append(cs, mustDialFrom(t, ts, fmt.Sprintf("127.0.0.%d", 2+i), fmt.Sprint("u", i), "g", nil))
	}
	if got := metricValue(t, ts, "wsproxy_admitted_connections"); got != 3 {
		t.Errorf("wsproxy_admitted_connections = %v, want 3", got)
	}
	expectRefused(t, ts, "127.0.0.9", nil, http.StatusServiceUnavailable, limits.ReasonMaxConnections, 5, 5)
	expectRefused(t, ts, "127.0.0.2", nil, http.StatusServiceUnavailable, limits.ReasonMaxConnections, 5, 5)

	// A connection that ends frees its slot.
	closeAndWaitOpen(t, ts, cs[0], 2)
	mustDialFrom(t, ts, "127.0.0.9", "u9", "g", nil)
	expectRefused(t, ts, "127.0.0.9", nil, http.StatusServiceUnavailable, limits.ReasonMaxConnections, 5, 5)

	// A replaced connection (4001) frees its slot: u1 replaced by a new
	// connection leaves 3 admitted, not 4.
	u1 := cs[1]
	closeAndWaitOpen(t, ts, cs[2], 2)
	mustDialFrom(t, ts, "127.0.0.7", "u1", "g", nil)
	expectClose(t, u1, session.StatusReplaced, 5*time.Second)
	waitOpen(t, ts, 2)
}

func TestAdmissionPerIP(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.Admission.MaxConnectionsPerIP = 2 })
	a1 := mustDialFrom(t, ts, "127.0.0.2", "a1", "g", nil)
	mustDialFrom(t, ts, "127.0.0.2", "a2", "g", nil)
	expectRefused(t, ts, "127.0.0.2", nil, http.StatusTooManyRequests, limits.ReasonIPConnections, 5, 5)

	// Another address has its own count.
	mustDialFrom(t, ts, "127.0.0.3", "b1", "g", nil)
	mustDialFrom(t, ts, "127.0.0.3", "b2", "g", nil)
	expectRefused(t, ts, "127.0.0.3", nil, http.StatusTooManyRequests, limits.ReasonIPConnections, 5, 5)

	closeAndWaitOpen(t, ts, a1, 3)
	mustDialFrom(t, ts, "127.0.0.2", "a3", "g", nil)
	expectRefused(t, ts, "127.0.0.2", nil, http.StatusTooManyRequests, limits.ReasonIPConnections, 5, 5)
}

func TestAdmissionConnectRate(t *testing.T) {
	// One new connection every 10 s after a burst of 2: the test's own
	// pace cannot earn a token.
	ts := startServer(t, func(o *Options) {
		o.Admission.ConnectRatePerIP = 0.1
		o.Admission.ConnectBurstPerIP = 2
	})
	closeAndWaitOpen(t, ts, mustDialFrom(t, ts, "127.0.0.4", "a1", "g", nil), 0)
	mustDialFrom(t, ts, "127.0.0.4", "a2", "g", nil)
	expectRefused(t, ts, "127.0.0.4", nil, http.StatusTooManyRequests, limits.ReasonIPRate, 8, 10)
	// Refused attempts take no token: the wait does not grow.
	for range 5 {
		expectRefused(t, ts, "127.0.0.4", nil, http.StatusTooManyRequests, limits.ReasonIPRate, 8, 10)
	}
	// Another address is not limited by the first one's attempts.
	mustDialFrom(t, ts, "127.0.0.5", "b1", "g", nil)
	mustDialFrom(t, ts, "127.0.0.5", "b2", "g", nil)
	expectRefused(t, ts, "127.0.0.5", nil, http.StatusTooManyRequests, limits.ReasonIPRate, 8, 10)
}

func TestAdmissionTrustedProxies(t *testing.T) {
	ts := startServer(t, func(o *Options) {
		o.Admission.MaxConnectionsPerIP = 1
		o.Admission.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

	// From the trusted proxy, X-Forwarded-For names the client: two
	// clients behind it, one connection each.
	mustDialFrom(t, ts, "127.0.0.2", "c1", "g", xff("198.51.100.1"))
	mustDialFrom(t, ts, "127.0.0.2", "c2", "g", xff("6.6.6.6, 198.51.100.2"))
	expectRefused(t, ts, "127.0.0.2", xff("198.51.100.1"), http.StatusTooManyRequests, limits.ReasonIPConnections, 1, 5)
	// A client cannot pose as another by writing to the left of what the
	// proxy appended.
	expectRefused(t, ts, "127.0.0.2", xff("198.51.100.9, 198.51.100.2"), http.StatusTooManyRequests, limits.ReasonIPConnections, 1, 5)

	// From an untrusted address the header is ignored: a spoofed header
	// does not get a second connection.
	mustDialFrom(t, ts, "127.0.0.3", "d1", "g", xff("198.51.100.3"))
	expectRefused(t, ts, "127.0.0.3", xff("198.51.100.4"), http.StatusTooManyRequests, limits.ReasonIPConnections, 1, 5)
	// ...nor take someone else's slot.
	mustDialFrom(t, ts, "127.0.0.4", "e1", "g", xff("198.51.100.1"))
}

// The per-address table stays bounded whatever the number of addresses; a
// new address meeting a full table of busy ones is refused.
func TestAdmissionTableBounded(t *testing.T) {
	const maxAddrs = 20
	ts := startServer(t, func(o *Options) {
		o.Admission.ConnectRatePerIP = 0.01 // an entry stays busy for 100 s
		o.Admission.MaxTrackedAddrs = maxAddrs
	})
	admitted := 0
	for i := range 60 {
		src := fmt.Sprintf("127.0.%d.%d", 10+i/200, 1+i%200)
		c, resp, err := dialFrom(t, ts, src, fmt.Sprint("u", i), "g", nil)
		if err == nil {
			admitted++
			c.CloseNow()
		} else if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("dial from %s: %v", src, err)
		}
		if n := ts.admit.Tracked(); n > maxAddrs {
			t.Fatalf("the table holds %d addresses, more than %d", n, maxAddrs)
		}
	}
	if admitted != maxAddrs {
		t.Errorf("%d addresses admitted, want %d", admitted, maxAddrs)
	}
	if n := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason="+limits.ReasonIPTableFull); n != 60-maxAddrs {
		t.Errorf("rejections{reason=ip_table_full} = %v, want %d", n, 60-maxAddrs)
	}
}

// A refused client's connection is closed after the answer: it cannot stay
// as an idle keep-alive connection holding a descriptor.
func TestAdmissionRefusalClosesConnection(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.Admission.MaxConnections = 1 })
	mustDialFrom(t, ts, "127.0.0.2", "a", "g", nil)
	nc, err := net.DialTimeout("tcp", strings.TrimPrefix(ts.http.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "GET /ws?id=b&groupName=g HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"+
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close {
		t.Fatalf("status %d, Connection: close %v; want 503 and close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the refusal: %v, want EOF (the server closes)", err)
	}
}

// Every path that ends a handshake after admission gives the slot back.
func TestAdmissionReleasedOnEarlyReturn(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.Admission.MaxConnections = 1 })

	// websocket.Accept fails: this ResponseWriter cannot be hijacked.
	r := httptest.NewRequest(http.MethodGet, "/ws?id=a&groupName=g", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	ts.ServeHTTP(httptest.NewRecorder(), r)
	if got := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason=accept"); got != 1 {
		t.Fatalf("rejections{reason=accept} = %v, want 1 (the accept did not fail?)", got)
	}
	waitOpen(t, ts, 0)

	// Draining: admitted, then refused by track.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ts.Shutdown(ctx)
	for range 3 {
		_, resp, err := dialFrom(t, ts, "127.0.0.2", "b", "g", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial while draining: %v", err)
		}
	}
	if got := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason=draining"); got != 3 {
		t.Fatalf("rejections{reason=draining} = %v, want 3", got)
	}
	waitOpen(t, ts, 0)
}
