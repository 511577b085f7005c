package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// run starts c.Run and returns a channel with its result; the test's end
// closes c and waits.
func run(t *testing.T, c *client.Client) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		c.Close()
		select {
		case <-c.Done():
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after Close")
		}
	})
	return ch
}

func newClient(p *proxytest.Proxy, id string, mod ...func(*client.ClientConfig)) *client.Client {
	cfg := client.ClientConfig{Config: client.Config{URL: p.URL, ID: id, Group: "g"}}
	for _, f := range mod {
		f(&cfg)
	}
	return client.New(cfg)
}

func connected(t *testing.T, p *proxytest.Proxy, c *client.Client) {
	t.Helper()
	if err := c.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	p.WaitMember(t, "g", c.ID())
}

// Every cause in the shared table (docs/protocol.md section 6, Reconnecting) gets its
// action.
func TestPolicyTable(t *testing.T) {
	for code, want := range map[int]client.Action{
		1000: client.Stop, 1001: client.Later, 1002: client.Stop, 1006: client.Backoff,
		1007: client.Stop, 1008: client.Backoff, 1009: client.Stop, 1011: client.Backoff,
		1013: client.BackoffMin, 4001: client.Stop, 4002: client.Now, 4003: client.Stop,
		4004: client.Later, 4005: client.Now, 4999: client.Stop,
	} {
		if got := client.CloseAction(code); got != want {
			t.Errorf("close %d: %q, want %q", code, got, want)
		}
	}
	for status, want := range map[int]client.Action{
		400: client.Stop, 401: client.Now, 403: client.Stop, 404: client.Stop, 426: client.Stop,
		429: client.Backoff, 503: client.Backoff, 502: client.Backoff,
	} {
		if got := client.HTTPAction(status); got != want {
			t.Errorf("HTTP %d: %q, want %q", status, got, want)
		}
	}
	in := func(r client.Retry, lo, hi time.Duration, again bool) {
		t.Helper()
		for range 200 {
			d, ok := client.DefaultPolicy(r)
			if ok != again || (again && (d < lo || d > hi)) {
				t.Fatalf("%+v: %v %v, want %v in [%v, %v]", r, d, ok, again, lo, hi)
			}
		}
	}
	in(client.Retry{Code: 1001}, time.Second, 5*time.Second, true)
	in(client.Retry{Code: 4002}, 0, 0, true)
	in(client.Retry{Code: 4001}, 0, 0, false)
	in(client.Retry{Code: 1013}, 5*time.Second, 30*time.Second, true)
	in(client.Retry{Code: 1008, Attempt: 0}, 500*time.Millisecond, time.Second, true)
	in(client.Retry{Code: 1008, Attempt: 3}, 4*time.Second, 8*time.Second, true)
	in(client.Retry{Code: 1006, Attempt: 40}, 15*time.Second, 30*time.Second, true)
	in(client.Retry{Err: errors.New("dial tcp: refused")}, 500*time.Millisecond, time.Second, true)
	in(client.Retry{HTTPStatus: 401}, 0, 0, false)
	in(client.Retry{HTTPStatus: 401, HasTokenSource: true, Streak: 1}, 0, 0, true)
	in(client.Retry{HTTPStatus: 401, HasTokenSource: true, Streak: 2}, 0, 0, false)
	in(client.Retry{HTTPStatus: 503, RetryAfter: 3 * time.Second}, 3*time.Second, 4*time.Second, true)
	in(client.Retry{Code: 4005, Streak: 2, Attempt: 1}, time.Second, 2*time.Second, true)
	// Jitter: not every delay is the same.
	seen := map[time.Duration]bool{}
	for range 20 {
		d, _ := client.DefaultPolicy(client.Retry{Code: 1001})
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("1001 delays are not jittered: %v", seen)
	}
}

// After 1001 (the proxy restarted) the client reconnects, after 1-5 s, and
// works again.
func TestReconnectsAfter1001(t *testing.T) {
	p := proxytest.Start(t)
	type disc struct {
		r     client.Retry
		delay time.Duration
		again bool
	}
	discs := make(chan disc, 4)
	got := make(chan string, 4)
	bob := newClient(p, "bob", func(cfg *client.ClientConfig) {
		cfg.OnDisconnect = func(_ context.Context, r client.Retry, d time.Duration, again bool) {
			discs <- disc{r, d, again}
		}
	})
	bob.OnText(func(_ context.Context, s string) error { got <- s; return nil })
	run(t, bob)
	connected(t, p, bob)
	p.Restart()
	var d disc
	select {
	case d = <-discs:
	case <-time.After(20 * time.Second):
		t.Fatal("no disconnect")
	}
	if d.r.Code != 1001 || !d.again || d.delay < time.Second || d.delay > 5*time.Second {
		t.Fatalf("after 1001: %+v", d)
	}
	p.WaitMember(t, "g", "bob") // on the new proxy
	alice := dial(t, p, "alice", "g")
	if err := alice.Send(ctxT(t), client.Text, []byte("back")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "back" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing after the reconnect")
	}
}

// 4001 (another connection took this id) is final: Run returns it and the
// client does not fight back.
func TestNoReconnectAfter4001(t *testing.T) {
	p := proxytest.Start(t)
	bob := newClient(p, "bob")
	done := run(t, bob)
	connected(t, p, bob)
	other := dial(t, p, "bob", "g") // replaces it
	select {
	case err := <-done:
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after 4001")
	}
	if bob.Connected() {
		t.Fatal("still connected")
	}
	// The replacement is left alone.
	if err := other.Send(ctxT(t), client.Text, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := bob.Send(ctxT(t), client.Text, []byte("x")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Send after Run: %v", err)
	}
}

// A refusal the policy calls final (400) ends Run with the proxy's reason.
func TestRunReturnsHandshakeRefusal(t *testing.T) {
	p := proxytest.Start(t)
	c := client.New(client.ClientConfig{Config: client.Config{URL: p.URL, ID: "bad id", Group: "g"}})
	select {
	case err := <-run(t, c):
		var he *client.HandshakeError
		if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run kept retrying a 400")
	}
}

type req struct{ A, B int }
type resp struct{ Sum int }

// Typed request and reply; a request nobody answers ends with its context.
func TestRequestReply(t *testing.T) {
	p := proxytest.Start(t)
	srv := newClient(p, "srv")
	client.On(srv, "add", func(ctx context.Context, r req, m *client.Meta) error {
		if m.From != "asker" || m.ID == "" {
			t.Errorf("meta %+v", m.Envelope)
		}
		return m.Reply(ctx, "sum", resp{r.A + r.B})
	})
	asker := newClient(p, "asker")
	run(t, srv)
	run(t, asker)
	connected(t, p, srv)
	connected(t, p, asker)
	got, err := client.Request[resp](ctxT(t), asker, "add", req{2, 3})
	if err != nil || got.Sum != 5 {
		t.Fatalf("got %+v %v", got, err)
	}
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := client.Request[resp](short, asker, "nobody-answers", req{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered: %v", err)
	}
	if !asker.Connected() {
		t.Fatal("a timed-out request cost the connection")
	}
}

// A handler may call Send, Request and Close on its own client: nothing
// deadlocks, and Run returns after Close.
func TestHandlerCallsSendRequestAndClose(t *testing.T) {
	p := proxytest.Start(t)
	echo := newClient(p, "echo")
	client.On(echo, "add", func(ctx context.Context, r req, m *client.Meta) error {
		return m.Reply(ctx, "sum", resp{r.A + r.B})
	})
	gotNote := make(chan string, 1)
	client.On(echo, "note", func(_ context.Context, s string, _ *client.Meta) error {
		gotNote <- s
		return nil
	})
	h := newClient(p, "h")
	client.On(h, "go", func(ctx context.Context, _ struct{}, _ *client.Meta) error {
		sum, err := client.Request[resp](ctx, h, "add", req{20, 22}) // inside a handler
		if err != nil {
			return err
		}
		if err := h.SendJSON(ctx, "note", "sum is "+itoa(sum.Sum)); err != nil {
			return err
		}
		h.Close() // from inside the handler
		return nil
	})
	hDone := run(t, h)
	run(t, echo)
	connected(t, p, h)
	connected(t, p, echo)
	trigger := dial(t, p, "trigger", "g")
	if err := trigger.Send(ctxT(t), client.Text, []byte(`{"type":"go","id":"1"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-gotNote:
		if s != "sum is 42" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the handler's Send never arrived")
	}
	select {
	case err := <-hDone:
		if err != nil {
			t.Fatalf("Run after Close from a handler: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close from a handler did not end Run")
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// Handlers run one at a time in arrival order, text and binary alike.
func TestHandlersRunInOrder(t *testing.T) {
	p := proxytest.Start(t)
	var mu sync.Mutex
	var got []int
	var running, overlap bool
	all := make(chan struct{})
	const n = 300
	record := func(v int) {
		mu.Lock()
		if running {
			overlap = true
		}
		running = true
		mu.Unlock()
		time.Sleep(50 * time.Microsecond)
		mu.Lock()
		running = false
		got = append(got, v)
		if len(got) == n {
			close(all)
		}
		mu.Unlock()
	}
	r := newClient(p, "r")
	client.On(r, "n", func(_ context.Context, v int, _ *client.Meta) error { record(v); return nil })
	r.OnBinary(func(_ context.Context, m *client.Message) error {
		b, err := m.Bytes(10)
		if err != nil {
			return err
		}
		record(int(b[0]) + 1000)
		return nil
	})
	run(t, r)
	connected(t, p, r)
	s := newClient(p, "s")
	run(t, s)
	connected(t, p, s)
	ctx := ctxT(t)
	for i := range n {
		var err error
		if i%10 == 9 {
			err = s.Send(ctx, client.Binary, []byte{byte(i / 10)})
		} else {
			err = s.SendJSON(ctx, "n", i)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("not every message was handled")
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Fatal("two handlers ran at once")
	}
	for i, v := range got {
		want := i
		if i%10 == 9 {
			want = i/10 + 1000
		}
		if v != want {
			t.Fatalf("handler %d got %d, want %d", i, v, want)
		}
	}
}

// A message cut by a lost connection fails for its sender and is never sent
// again after the reconnect: the first thing a new member hears is what
// the client sends next.
func TestNoResendAfterReconnect(t *testing.T) {
	p := proxytest.Start(t)
	a := newClient(p, "a", func(cfg *client.ClientConfig) {
		cfg.Policy = func(r client.Retry) (time.Duration, bool) { return 10 * time.Millisecond, true }
	})
	run(t, a)
	connected(t, p, a)
	ctx := ctxT(t)
	w, err := a.Writer(ctx, client.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 2<<20)); err != nil { // streamed: the proxy holds the group for it
		t.Fatal(err)
	}
	p.Restart() // gives up on the message after its shutdown timeout, then 1001
	var werr error
	for deadline := time.Now().Add(20 * time.Second); werr == nil && time.Now().Before(deadline); {
		_, werr = w.Write(make([]byte, 32<<10))
		time.Sleep(time.Millisecond)
	}
	if cerr := w.Close(); werr == nil {
		werr = cerr
	}
	var ce *client.CloseError
	if !errors.As(werr, &ce) && !errors.Is(werr, client.ErrConnectionLost) {
		t.Fatalf("the cut message: %v, want a close error or ErrConnectionLost", werr)
	}
	p.WaitMember(t, "g", "a") // reconnected to the new proxy
	b := dial(t, p, "b", "g")
	if err := a.Send(ctx, client.Text, []byte("after")); err != nil {
		t.Fatal(err)
	}
	m, err := b.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Bytes(1 << 20); m.Type != client.Text || string(got) != "after" {
		t.Fatalf("b first got a %v message of %d bytes", m.Type, len(got))
	}
}

// Close before Run: Run returns at once, and Done is closed.
func TestCloseBeforeRun(t *testing.T) {
	p := proxytest.Start(t)
	c := newClient(p, "early")
	c.Close()
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}
}
