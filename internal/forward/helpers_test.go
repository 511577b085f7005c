package forward

import (
	"context"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/metrics"
)

// testOptions are the defaults of SPEC section 7, with short timeouts.
func testOptions() Options {
	return Options{
		BufferBytes:        1 << 20,
		MessageIdleTimeout: 5 * time.Second,
		SendQueueBytes:     8 << 20,
		WriteTimeout:       2 * time.Second,
		PingInterval:       0,
		PingTimeout:        time.Second,
		CloseGrace:         time.Second,
	}
}

type testServer struct {
	*Server
	http *httptest.Server
	url  string // ws://host/ws
}

// startServer runs a forward.Server behind a real HTTP server. The server is
// shut down (and its sessions closed) when the test ends.
func startServer(t testing.TB, mod ...func(*Options)) *testServer {
	t.Helper()
	opts := testOptions()
	for _, f := range mod {
		f(&opts)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	s := NewServer(opts, log, metrics.New())
	hs := httptest.NewServer(s)
	ts := &testServer{Server: s, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		hs.Close()
	})
	return ts
}

func wsURL(base, id, group string) string {
	return base + "?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
}

// dial connects a real WebSocket client with no read limit.
func dial(t testing.TB, ts *testServer, id, group string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(ts.url, id, group), nil)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", group, id, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	waitMember(t, ts, group, id)
	return c
}

// waitMember waits until id is a member of group, so that a message sent
// next is sure to reach it.
func waitMember(t testing.TB, ts *testServer, group, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ts.registry.Member(group, id) != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never joined %s", id, group)
}

func readMsg(t testing.TB, c *websocket.Conn, timeout time.Duration) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, b
}

func writeMsg(t testing.TB, c *websocket.Conn, typ websocket.MessageType, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectNothing asserts no message arrives on c within d. It leaves c
// unusable (an expired read closes a coder/websocket connection).
func expectNothing(t testing.TB, c *websocket.Conn, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if typ, b, err := c.Read(ctx); err == nil {
		t.Fatalf("unexpected %v message of %d bytes", typ, len(b))
	}
}

// expectClose reads until the connection ends and asserts its close code.
func expectClose(t testing.TB, c *websocket.Conn, code websocket.StatusCode, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != code {
			t.Fatalf("close status = %d (%v), want %d", got, err, code)
		}
		return
	}
}

// metricValue is the sum of the counter and gauge samples of family name in
// ts's registry whose labels include every "label=value" in labels; 0 if
// there are none.
func metricValue(t testing.TB, ts *testServer, name string, labels ...string) float64 {
	t.Helper()
	fams, err := ts.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for _, want := range labels {
				k, v, _ := strings.Cut(want, "=")
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue samples
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
