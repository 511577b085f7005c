package forward

import (
	"context"
	"encoding/binary"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestShutdownDeliversThenGoesAway: messages sent before Shutdown are all
// delivered, then every client is closed with 1001 "going away", and
// Shutdown returns. (TestMain checks no goroutine outlives it.)
func TestShutdownDeliversThenGoesAway(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	c := dial(t, ts, "c", "other")
	const count = 300
	for i := range count {
		msg := make([]byte, 1024)
		binary.BigEndian.PutUint32(msg, uint32(i))
		writeMsg(t, a, websocket.MessageBinary, msg)
	}
	// Shut down at once: some of those messages are still in a's socket.
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ts.Shutdown(ctx)
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range count {
		_, msg, err := b.Read(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", i, count, err)
		}
		if got := binary.BigEndian.Uint32(msg); got != uint32(i) {
			t.Fatalf("got %d, want %d", got, i)
		}
	}
	for _, conn := range []*websocket.Conn{a, b, c} {
		expectClose(t, conn, websocket.StatusGoingAway, 5*time.Second)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestShutdownRefusesNewAndBoundsStuckClients: while draining, new
// connections get 503; a client that reads nothing cannot hold the shutdown
// past the drain timeout plus the close grace.
func TestShutdownRefusesNewAndBoundsStuckClients(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.WriteTimeout = time.Minute })
	sender := dial(t, ts, "sender", "g")
	dial(t, ts, "stuck", "g") // never reads
	stuck := ts.registry.Member("g", "stuck")
	msg := make([]byte, 64<<10)
	for stuck.QueuedBytes() < 1<<20 { // fill its socket, then its queue
		writeMsg(t, sender, websocket.MessageBinary, msg)
	}

	start := time.Now()
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		ts.Shutdown(ctx)
		close(done)
	}()
	waitFor(t, 2*time.Second, "draining", ts.Draining)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, hr, err := websocket.Dial(ctx, wsURL(ts.url, "late", "g"), nil)
	if err == nil || hr == nil || hr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial while draining: %v, response %v; want 503", err, hr)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return within 30 s")
	}
	// Expected: the 0.5 s drain, then the 1 s close grace. Unbounded, the
	// stuck client would hold it for the one-minute write timeout; the bound
	// leaves a busy machine room far below that.
	d := time.Since(start)
	t.Logf("shutdown took %v", d)
	if d > 10*time.Second {
		t.Fatalf("shutdown took %v, want about 1.5 s (drain timeout + close grace)", d)
	}
}
