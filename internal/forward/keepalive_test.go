package forward

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestKeepalive: a client that answers pings stays through many intervals; one
// that never answers (it never reads, so its library never sends pongs) is
// closed within the ping interval plus the ping timeout.
func TestKeepalive(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		// A generous timeout: under -race on a busy machine a live client
		// can take a while to answer.
		o.PingInterval = 50 * time.Millisecond
		o.PingTimeout = time.Second
	})
	alive := dial(t, ts, "alive", "g")
	dial(t, ts, "silent", "g")
	silent := ts.registry.Member("g", "silent")
	sender := dial(t, ts, "sender", "g")
	go func() { // sender must read too, or it is the silent one
		for {
			if _, _, err := sender.Read(context.Background()); err != nil {
				return
			}
		}
	}()

	got := make(chan string, 1)
	go func() {
		_, b, err := alive.Read(context.Background()) // answers pings while it waits
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()

	// Expected after the interval, the ping timeout and the close grace
	// (about 2 s). Without the close grace the library's own 5 s close
	// timeout would apply, so the bound leaves room for a busy machine
	// while staying below that.
	const bound = 4500 * time.Millisecond
	start := time.Now()
	select {
	case <-silent.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a client that never answers pings was not closed within 10 s")
	}
	if d := time.Since(start); d > bound {
		t.Fatalf("closed after %v, want within %v (ping interval + ping timeout + close grace)", d, bound)
	}
	if code, reason, _ := silent.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "policy" {
		t.Fatalf("silent client closed with %d %q", code, reason)
	}

	time.Sleep(500 * time.Millisecond) // ten intervals
	writeMsg(t, sender, websocket.MessageText, []byte("still here"))
	if msg := <-got; msg != "still here" {
		t.Fatalf("alive client: %s", msg)
	}
	if code, _, _ := ts.registry.Member("g", "alive").CloseStatus(); code != 0 {
		t.Fatalf("alive client was closed with %d", code)
	}
}
