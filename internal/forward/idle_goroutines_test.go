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
	settle := func() int {
		time.Sleep(100 * time.Millisecond)
		return runtime.NumGoroutine()
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
