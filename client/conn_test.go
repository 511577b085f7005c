package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, p *proxytest.Proxy, id, group string) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctxT(t), client.Config{URL: p.URL, ID: id, Group: group})
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	p.WaitMember(t, group, id)
	return c
}

// A refused handshake carries the status and the proxy's own reason.
func TestHandshakeErrorCarriesReason(t *testing.T) {
	p := proxytest.Start(t)
	_, err := client.Dial(ctxT(t), client.Config{URL: p.URL, ID: "a b", Group: "g"})
	var he *client.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("got %T %v, want *HandshakeError", err, err)
	}
	if he.Status != 400 || !strings.Contains(he.Reason, "parameter id") {
		t.Fatalf("got %d %q", he.Status, he.Reason)
	}
	if strings.Contains(err.Error(), "expected handshake response") {
		t.Fatalf("the library's text leaked: %v", err)
	}
}

// 429 and 503 carry Retry-After; the token source's token is sent as a
// bearer token.
func TestHandshakeRetryAfterAndToken(t *testing.T) {
	got := make(chan string, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":"too many connections from this address"}`))
	}))
	defer hs.Close()
	_, err := client.Dial(ctxT(t), client.Config{
		URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", ID: "a", Group: "g",
		TokenSource: func(context.Context) (string, error) { return "tok-123", nil },
	})
	var he *client.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("got %v", err)
	}
	if he.Status != 429 || he.RetryAfter != 7*time.Second || he.Reason != "too many connections from this address" {
		t.Fatalf("got %+v", he)
	}
	if a := <-got; a != "Bearer tok-123" {
		t.Fatalf("Authorization: %q", a)
	}
	if d, ok := client.DefaultPolicy(client.Retry{HTTPStatus: 429, RetryAfter: he.RetryAfter}); !ok || d < 7*time.Second || d > 8*time.Second {
		t.Fatalf("policy for 429 Retry-After 7: %v %v", d, ok)
	}
}

// A message larger than the library's default read limit and than the
// proxy's buffer streams through, byte-exact, written in pieces and read in
// pieces.
func TestStreamsLargeMessage(t *testing.T) {
	p := proxytest.Start(t)
	a, b := dial(t, p, "a", "g"), dial(t, p, "b", "g")
	ctx := ctxT(t)
	const size = 24 << 20
	src := make([]byte, size)
	_, _ = rand.Read(src)
	go func() {
		w, err := a.Writer(ctx, client.Binary)
		if err != nil {
			t.Error(err)
			return
		}
		for off := 0; off < size; off += 100_000 {
			if _, err := w.Write(src[off:min(size, off+100_000)]); err != nil {
				t.Error(err)
				return
			}
		}
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}()
	m, err := b.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, m, make([]byte, 7000))
	if err != nil || n != size || m.Type != client.Binary {
		t.Fatalf("read %d %v %v", n, m.Type, err)
	}
	if !bytes.Equal(h.Sum(nil), sha256.New().Sum(nil)) && !bytes.Equal(h.Sum(nil), sum(src)) {
		t.Fatal("bytes differ")
	}
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// A caller's context that ends while waiting for a message or for the
// writer leaves the connection working (coder/websocket alone would close
// it).
func TestContextBoundsWaitingOnly(t *testing.T) {
	p := proxytest.Start(t)
	a, b := dial(t, p, "a", "g"), dial(t, p, "b", "g")
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v", err)
	}
	ctx := ctxT(t)
	w, err := a.Writer(ctx, client.Text)
	if err != nil {
		t.Fatal(err)
	}
	short2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := a.Writer(short2, client.Text); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Writer: %v", err)
	}
	_, _ = w.Write([]byte("still here"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := b.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Bytes(100); string(got) != "still here" {
		t.Fatalf("got %q", got)
	}
}

// A context that ends mid-message abandons it: the connection is closed
// and the error says so; the receiver part-way gets 4002, never a message.
func TestContextEndingMidMessageAborts(t *testing.T) {
	p := proxytest.Start(t)
	a, b := dial(t, p, "a", "g"), dial(t, p, "b", "g")
	ctx, cancel := context.WithCancel(ctxT(t))
	w, err := a.Writer(ctx, client.Binary)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(make([]byte, 3<<20)) // past the proxy's buffer: streamed
	m, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Close(); !errors.Is(err, client.ErrMessageAborted) {
		t.Fatalf("Close: %v", err)
	}
	_, err = io.Copy(io.Discard, m)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 {
		t.Fatalf("receiver: %v", err)
	}
}

// The proxy's close code comes back as a *CloseError.
func TestCloseErrorOnReplace(t *testing.T) {
	p := proxytest.Start(t)
	a := dial(t, p, "a", "g")
	ctx := ctxT(t)
	a2, err := client.Dial(ctx, client.Config{URL: p.URL, ID: "a", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	_, err = a.Next(ctx)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "replaced" {
		t.Fatalf("got %v", err)
	}
	if _, err := a.Next(ctx); !errors.As(err, &ce) {
		t.Fatalf("again: %v", err)
	}
	if err := a.Send(ctx, client.Text, []byte("x")); !errors.As(err, &ce) {
		t.Fatalf("Send after the close: %v", err)
	}
}

// A connection that drops in the middle of a message gives
// ErrConnectionLost, not a short message that looks whole (the library
// alone reads it as io.EOF).
func TestDropMidMessageIsNotEOF(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		mw, err := c.Writer(r.Context(), websocket.MessageBinary)
		if err != nil {
			return
		}
		_, _ = mw.Write(make([]byte, 200_000))
		_ = c.CloseNow() // no fin, no close frame
	}))
	defer hs.Close()
	c, err := client.Dial(ctxT(t), client.Config{URL: hs.URL, ID: "a", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, m)
	if !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("read %d bytes, then %v; want ErrConnectionLost", n, err)
	}
}
