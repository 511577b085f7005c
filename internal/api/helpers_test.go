package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// TestMain fails the package if goroutines outlive its tests or a message Buf
// or ring is still held after them.
func TestMain(m *testing.M) { leakcheck.Main(m) }

type proxy struct {
	fwd     *forward.Server
	metrics *metrics.Metrics
	base    string // http://host
	token   string // sent by do unless the test says otherwise
}

// options with short timeouts; --buffer-bytes is small so that bodies of a
// few hundred KiB take the streamed path.
func testForwardOptions() forward.Options {
	return forward.Options{
		BufferBytes:        64 << 10,
		MessageIdleTimeout: 5 * time.Second,
		SendQueueBytes:     1 << 20,
		WriteTimeout:       2 * time.Second,
		PingTimeout:        time.Second,
		CloseGrace:         time.Second,
	}
}

// startProxy serves /ws and /api as cmd/proxy does, on a real HTTP server.
func startProxy(t testing.TB, opts Options, mod ...func(*forward.Options)) *proxy {
	t.Helper()
	fo := testForwardOptions()
	fo.MaxMessageBytes = opts.MaxMessageBytes // one flag sets both, as in cmd/proxy
	for _, f := range mod {
		f(&fo)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	m := metrics.New()
	fwd := forward.NewServer(fo, log, m)
	r := chi.NewRouter()
	r.Handle("/ws", fwd)
	r.Mount("/api", New(fwd, opts, log, m))
	hs := httptest.NewServer(r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		fwd.Shutdown(ctx)
		hs.Close()
	})
	return &proxy{fwd: fwd, metrics: m, base: hs.URL, token: opts.Token}
}

// dial joins group as id with a real WebSocket client and waits until the
// proxy lists it, so that a message published next reaches it.
func (p *proxy) dial(t testing.TB, id, group string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(p.base, "http") + "/ws?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", group, id, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	waitFor(t, "member to join", func() bool { return p.fwd.Registry().Member(group, id) != nil })
	return c
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// errorText is the "error" field of a JSON error body.
func (r response) errorText(t testing.TB) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("status %d: body %q is not a JSON error", r.status, r.body)
	}
	return e.Error
}

// do sends a request to the proxy with the proxy's token, if any. path is
// used as written (already escaped).
func (p *proxy) do(t testing.TB, method, path, contentType string, body io.Reader) response {
	t.Helper()
	return p.doAuth(t, method, path, contentType, body, "Bearer "+p.token)
}

func (p *proxy) doAuth(t testing.TB, method, path, contentType string, body io.Reader, auth string) response {
	t.Helper()
	r, err := p.request(method, path, contentType, body, auth)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// request is doAuth for goroutines other than the test's.
func (p *proxy) request(method, path, contentType string, body io.Reader, auth string) (response, error) {
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" && auth != "Bearer " {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

// decode parses a JSON response of the wanted status into v.
func decode(t testing.TB, r response, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("body %q: %v", r.body, err)
		}
	}
}

// receivers is the {"receivers": N} of a 202.
func receivers(t testing.TB, r response) int {
	t.Helper()
	var v struct {
		Receivers *int `json:"receivers"`
	}
	decode(t, r, http.StatusAccepted, &v)
	if v.Receivers == nil {
		t.Fatalf("no receivers in %s", r.body)
	}
	return *v.Receivers
}

func readMsg(t testing.TB, c *websocket.Conn) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, b
}

// expectMsg reads the next message and checks its type and bytes.
func expectMsg(t testing.TB, c *websocket.Conn, typ websocket.MessageType, want []byte) {
	t.Helper()
	gotType, got := readMsg(t, c)
	if gotType != typ || string(got) != string(want) {
		t.Fatalf("got %v message of %d bytes (%.40q), want %v of %d bytes (%.40q)",
			gotType, len(got), got, typ, len(want), want)
	}
}

// expectClose reads until the connection ends and checks the close code.
func expectClose(t testing.TB, c *websocket.Conn, code websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if got := websocket.CloseStatus(err); got != code {
				t.Fatalf("close status = %d (%v), want %d", got, err, code)
			}
			return
		}
	}
}

// groupPath is /api/groups/<name> with the name escaped as clients do.
func groupPath(name string) string { return "/api/groups/" + url.PathEscape(name) }
