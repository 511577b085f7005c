package forward

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// An idle connection costs the server one goroutine, its reader: the net/http
// handler returns after the upgrade and no writer runs while nothing is
// queued. (Not parallel: it counts the process's goroutines.)
func TestIdleConnectionsHoldOneGoroutine(t *testing.T) {
	ts := startServer(t)
	// settle waits until the count has held still for 200 ms: goroutines of
	// earlier tests' connections may still be ending, and new connections'
	// handshake goroutines may not have ended yet.
	settle := func() int {
		n, still := runtime.NumGoroutine(), time.Now()
		for deadline := time.Now().Add(10 * time.Second); time.Since(still) < 200*time.Millisecond; {
			if time.Now().After(deadline) {
				t.Fatalf("the goroutine count never held still for 200 ms; last %d", n)
			}
			time.Sleep(10 * time.Millisecond)
			if m := runtime.NumGoroutine(); m != n {
				n, still = m, time.Now()
			}
		}
		return n
	}
	before := settle()
	const n = 40
	for i := range n {
		dial(t, ts, "m"+strconv.Itoa(i), "g"+strconv.Itoa(i/2))
	}
	got := settle() - before
	// Client connections of coder/websocket start no goroutine of their own.
	if got < n || got > n+n/4 {
		t.Fatalf("%d idle connections added %d goroutines, want about %d", n, got, n)
	}
}
