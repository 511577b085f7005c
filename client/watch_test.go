package client_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// fast reconnects at once, except after Close.
func fast(r client.Retry) (time.Duration, bool) {
	return 10 * time.Millisecond, !errors.Is(r.Err, client.ErrClosed)
}

func watchT(t *testing.T, p *proxytest.Proxy, group string, mod ...func(*client.WatchConfig)) *client.Watcher {
	t.Helper()
	cfg := client.WatchConfig{Config: client.Config{URL: p.URL, Group: group}, Policy: fast}
	for _, f := range mod {
		f(&cfg)
	}
	w, err := client.Watch(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func next(t *testing.T, w *client.Watcher) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func expect(t *testing.T, w *client.Watcher, typ client.EventType, id string, seq uint64) client.Event {
	t.Helper()
	ev := next(t, w)
	if ev.Type != typ || ev.ID != id || ev.Seq != seq || ev.Group != "g" || ev.Epoch == "" {
		t.Fatalf("event %+v, want %s %s seq %d", ev, typ, id, seq)
	}
	if typ != client.Snapshot && time.Since(ev.At) > time.Minute {
		t.Fatalf("event at %v", ev.At)
	}
	return ev
}

// A snapshot, then one event per join, replacement, client close, kick and
// drop, with the member's close code and the page's words for it.
func TestWatchEvents(t *testing.T) {
	p := proxytest.Start(t)
	alice := dial(t, p, "alice", "g")
	p.WaitMember(t, "g", "alice")
	w := watchT(t, p, "g")
	snap := expect(t, w, client.Snapshot, "", 0)
	if len(snap.Members) != 1 || snap.Members[0].ID != "alice" || time.Since(snap.Members[0].Since) > time.Minute {
		t.Fatalf("snapshot members %+v", snap.Members)
	}

	bob := dial(t, p, "bob", "g")
	if ev := expect(t, w, client.Join, "bob", 1); ev.Replaced {
		t.Fatalf("bob's join replaced: %+v", ev)
	}
	_ = bob.Close()
	ev := expect(t, w, client.Leave, "bob", 2)
	if ev.Code != 1000 || ev.Reason != "closed by client" || ev.Why() != "left" {
		t.Fatalf("bob's leave %+v (%s)", ev, ev.Why())
	}

	// A second alice replaces the first: one join, replaced.
	alice2 := dial(t, p, "alice", "g")
	if ev := expect(t, w, client.Join, "alice", 3); !ev.Replaced {
		t.Fatalf("alice's replacement %+v", ev)
	}
	_ = alice
	if err := p.Server().Kick("g", "alice"); err != nil {
		t.Fatal(err)
	}
	ev = expect(t, w, client.Leave, "alice", 4)
	if ev.Code != 4003 || ev.Reason != "kicked" || ev.Why() != "was kicked by an administrator" {
		t.Fatalf("alice's kick %+v (%s)", ev, ev.Why())
	}
	_ = alice2
	if ev.Cursor() != ev.Epoch+":4" {
		t.Fatalf("cursor %q", ev.Cursor())
	}
}

// After the proxy closes the watcher, it reconnects with since and gets the
// events it missed, and no snapshot; after a restart (a new epoch), a fresh
// snapshot.
func TestWatchResume(t *testing.T) {
	p := proxytest.Start(t)
	var disconnects atomic.Int32
	w := watchT(t, p, "g", func(c *client.WatchConfig) {
		c.OnDisconnect = func(r client.Retry, _ time.Duration, again bool) {
			if r.Code == 1012 && again {
				disconnects.Add(1)
			}
		}
	})
	snap := expect(t, w, client.Snapshot, "", 0)
	dial(t, p, "alice", "g")
	expect(t, w, client.Join, "alice", 1)

	// The proxy closes the watcher; bob joins while it is away.
	ws := p.Server().Presence().Watchers()
	if len(ws) != 1 {
		t.Fatalf("%d watchers", len(ws))
	}
	ws[0].Close(websocket.StatusServiceRestart, "service restart")
	waitFor(t, func() bool { return len(p.Server().Presence().Watchers()) == 0 })
	dial(t, p, "bob", "g")
	p.WaitMember(t, "g", "bob")
	if ev := expect(t, w, client.Join, "bob", 2); ev.Epoch != snap.Epoch {
		t.Fatalf("resumed in another epoch: %+v", ev)
	}
	if disconnects.Load() != 1 {
		t.Fatalf("OnDisconnect saw %d 1012 closes", disconnects.Load())
	}

	// A restart loses the history: a fresh snapshot, members as they are.
	p.Restart()
	carol := dial(t, p, "carol", "g")
	p.WaitMember(t, "g", "carol")
	// The old proxy's shutdown may show first: alice and bob leave (1001).
	ev := next(t, w)
	for ev.Type == client.Leave && ev.Epoch == snap.Epoch && ev.Code == 1001 {
		ev = next(t, w)
	}
	if ev.Type != client.Snapshot || ev.Epoch == snap.Epoch {
		t.Fatalf("after a restart %+v, want a snapshot of a new epoch", ev)
	}
	if len(ev.Members) == 0 {
		// the watcher may have reconnected before carol joined
		expect(t, w, client.Join, "carol", ev.Seq+1)
	} else if len(ev.Members) != 1 || ev.Members[0].ID != "carol" {
		t.Fatalf("snapshot after restart %+v", ev.Members)
	}
	_ = carol
}

// Close ends Next with ErrClosed, even from another goroutine while it
// waits; a refused watcher says why.
func TestWatchCloseAndRefusal(t *testing.T) {
	p := proxytest.Start(t)
	w := watchT(t, p, "g")
	expect(t, w, client.Snapshot, "", 0)
	done := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = w.Close()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Next did not return after Close")
	}
	// A ctx that ends leaves the watcher usable.
	w2 := watchT(t, p, "g")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if _, err := w2.Next(ctx); err != nil {
		t.Fatalf("first event: %v", err)
	}
	if _, err := w2.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next past ctx: %v", err)
	}
	cancel()
	dial(t, p, "dave", "g")
	expect(t, w2, client.Join, "dave", 1)

	_, err := client.Watch(ctxT(t), client.WatchConfig{Config: client.Config{URL: p.URL, Group: strings.Repeat("x", 200)}})
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != 400 || !strings.Contains(he.Reason, "groupName") {
		t.Fatalf("bad group: %v", err)
	}
}

// Why says what the browser page says: every code in the client's table is
// in the page's, with the same words.
func TestWatchWordsMatchPage(t *testing.T) {
	page, err := os.ReadFile("../internal/web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []int{1000, 1001, 1006, 1009, 1011, 1013, 4002, 4003, 4004, 4005} {
		why := client.Event{Type: client.Leave, Code: code}.Why()
		if !strings.Contains(string(page), strconv.Itoa(code)+`: "`+why+`"`) {
			t.Errorf("code %d: %q is not the page's words", code, why)
		}
	}
	for reason, why := range map[string]string{"slow consumer": "was too slow to receive", "rate limited": "sent too fast",
		"message stalled": "stalled sending a message", "policy": "did not answer keepalive pings"} {
		got := client.Event{Type: client.Leave, Code: 1008, Reason: reason}.Why()
		if got != why || !strings.Contains(string(page), `"`+reason+`": "`+why+`"`) {
			t.Errorf("1008 %s: %q", reason, got)
		}
	}
	if got := (client.Event{Type: client.Leave, Code: 4999}).Why(); got != "left (4999)" {
		t.Errorf("unknown code: %q", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
