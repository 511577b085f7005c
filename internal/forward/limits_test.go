package forward

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/session"
)

// expectCloseReason reads until c ends and asserts the close code and reason.
func expectCloseReason(t testing.TB, c *websocket.Conn, code websocket.StatusCode, reason string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !asCloseError(err, &ce) || ce.Code != code || ce.Reason != reason {
			t.Fatalf("closed with %v, want %d %q", err, code, reason)
		}
		return
	}
}

func asCloseError(err error, ce *websocket.CloseError) bool {
	code := websocket.CloseStatus(err)
	if code == -1 {
		return false
	}
	*ce = websocket.CloseError{Code: code, Reason: closeReason(err)}
	return true
}

// closeReason digs the reason out of a CloseError wrapped by the library.
func closeReason(err error) string {
	for e := err; e != nil; {
		if ce, ok := e.(websocket.CloseError); ok {
			return ce.Reason
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return ""
		}
		e = u.Unwrap()
	}
	return ""
}

// dialAny connects without waiting to become a member (it may be refused
// right after the upgrade).
func dialAny(t testing.TB, ts *testServer, id, group string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(ts.url, id, group), nil)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", group, id, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestMaxGroups: a member that would create one group too many is closed
// with 1013 "too many groups" right after the upgrade; joining an existing
// group still works, and once a group goes away a new one may be made.
func TestMaxGroups(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxGroups = 2 })
	a := dial(t, ts, "a", "g1")
	dial(t, ts, "b", "g2")
	c := dialAny(t, ts, "c", "g3")
	expectCloseReason(t, c, websocket.StatusTryAgainLater, "too many groups", 10*time.Second)
	if n := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason=too_many_groups"); n != 1 {
		t.Errorf("rejections{too_many_groups} = %v, want 1", n)
	}
	// An existing group takes more members.
	a2 := dial(t, ts, "a2", "g1")
	writeMsg(t, a2, websocket.MessageText, []byte("hi"))
	if _, b := readMsg(t, a, 5*time.Second); string(b) != "hi" {
		t.Fatalf("got %q", b)
	}
	// g1 goes away; g3 may now be made.
	a.Close(websocket.StatusNormalClosure, "")
	a2.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 30*time.Second, "g1 to go", func() bool { return ts.Registry().Get("g1") == nil })
	dial(t, ts, "c", "g3")
}

// TestMaxMembersPerGroup: one member too many is closed with 1013 "group
// full"; a replacement (same id) is not a new member; other groups are not
// limited by a full one.
func TestMaxMembersPerGroup(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxMembersPerGroup = 2 })
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	c := dialAny(t, ts, "c", "g")
	expectCloseReason(t, c, websocket.StatusTryAgainLater, "group full", 10*time.Second)
	if n := metricValue(t, ts, "wsproxy_handshake_rejections_total", "reason=group_full"); n != 1 {
		t.Errorf("rejections{group_full} = %v, want 1", n)
	}
	// The members were not disturbed.
	writeMsg(t, a, websocket.MessageText, []byte("still here"))
	if _, got := readMsg(t, b, 5*time.Second); string(got) != "still here" {
		t.Fatalf("got %q", got)
	}
	// b again replaces b: the group stays at two.
	b2 := dial(t, ts, "b", "g")
	expectCloseReason(t, b, 4001, "replaced", 10*time.Second)
	writeMsg(t, a, websocket.MessageText, []byte("to the new b"))
	if _, got := readMsg(t, b2, 5*time.Second); string(got) != "to the new b" {
		t.Fatalf("got %q", got)
	}
	// Another group is not full.
	dial(t, ts, "c", "other")
}

// TestRateLimitThrottle: over --message-rate and --byte-rate the proxy stops
// reading for a while: every message arrives, whole and in order, no sooner
// than the rate allows, and the sender is neither closed nor found stalled
// (its message idle timeout is shorter than the waits).
func TestRateLimitThrottle(t *testing.T) {
	t.Run("messages", func(t *testing.T) {
		ts := startServer(t, func(o *Options) {
			o.MessageRate, o.MessageBurst = 20, 5
			o.MessageIdleTimeout = 300 * time.Millisecond
		})
		a, b := dial(t, ts, "a", "g"), dial(t, ts, "b", "g")
		const n = 45
		start := time.Now()
		go func() {
			for i := range n {
				if a.Write(context.Background(), websocket.MessageBinary, seqMsg(i, 100)) != nil {
					return
				}
			}
		}()
		for i := range n {
			_, got := readMsg(t, b, 30*time.Second)
			if !bytes.Equal(got, seqMsg(i, 100)) {
				t.Fatalf("message %d differs", i)
			}
		}
		// 5 at once, then 40 at 20 a second: at least 2 s.
		if d := time.Since(start); d < 1900*time.Millisecond {
			t.Errorf("%d messages in %v: faster than --message-rate allows", n, d)
		}
		if v := metricValue(t, ts, "wsproxy_rate_limited_total", "action=throttle"); v == 0 {
			t.Error("no throttling counted")
		}
		writeMsg(t, a, websocket.MessageText, []byte("still open"))
		readMsg(t, b, 10*time.Second)
	})
	t.Run("bytes", func(t *testing.T) {
		ts := startServer(t, func(o *Options) {
			// Reads wait about a second at a time: well over the idle
			// timeout, which must not count them.
			o.ByteRate, o.ByteBurst = 64<<10, 64<<10
			o.BufferBytes = 64 << 10 // the message is streamed
			o.MessageIdleTimeout = 300 * time.Millisecond
		})
		a, b := dial(t, ts, "a", "g"), dial(t, ts, "b", "g")
		big := bytes.Repeat([]byte("0123456789abcdef"), 12<<10) // 192 KiB
		start := time.Now()
		go func() { _ = a.Write(context.Background(), websocket.MessageBinary, big) }()
		if _, got := readMsg(t, b, 60*time.Second); !bytes.Equal(got, big) {
			t.Fatalf("got %d bytes, want the %d sent", len(got), len(big))
		}
		// 64 KiB at once, the rest at 64 KiB/s: at least 2 s.
		if d := time.Since(start); d < 1900*time.Millisecond {
			t.Errorf("192 KiB in %v: faster than --byte-rate allows", d)
		}
		writeMsg(t, a, websocket.MessageText, []byte("still open"))
		readMsg(t, b, 10*time.Second)
	})
}

// TestRateLimitClose: with --rate-limit-action=close, a sender over its rate
// is closed with 1008 "rate limited"; what it sent before arrives whole and
// in order, and the receiver stays open.
func TestRateLimitClose(t *testing.T) {
	ts := startServer(t, func(o *Options) {
		o.MessageRate, o.MessageBurst = 2, 3
		o.RateLimitClose = true
	})
	a, b := dial(t, ts, "a", "g"), dial(t, ts, "b", "g")
	go func() {
		for i := range 20 {
			if a.Write(context.Background(), websocket.MessageBinary, seqMsg(i, 64)) != nil {
				return
			}
		}
	}()
	expectCloseReason(t, a, websocket.StatusPolicyViolation, "rate limited", 10*time.Second)
	waitFor(t, 30*time.Second, "a to leave", func() bool { return ts.Registry().Member("g", "a") == nil })
	if ts.Registry().Member("g", "b") == nil {
		t.Fatal("b is gone too")
	}
	// At least the burst arrived, in order; nothing after the close.
	var got int
	for ; ; got++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, m, err := b.Read(ctx)
		cancel()
		if err != nil {
			break // b is unusable from here (the read expired)
		}
		if !bytes.Equal(m, seqMsg(got, 64)) {
			t.Fatalf("message %d differs", got)
		}
	}
	if got < 3 || got > 4 {
		t.Errorf("receiver got %d messages, want the burst of 3 (4 if a token came back meanwhile)", got)
	}
	if v := metricValue(t, ts, "wsproxy_rate_limited_total", "action=close"); v != 1 {
		t.Errorf("rate_limited_total{close} = %v, want 1", v)
	}
}

// heapWatch measures the live heap now, and returns a func that measures it
// again and returns the growth. Each measure collects garbage first (twice:
// pooled buffers survive one collection), so what it sees is what is pinned.
func heapWatch() (stop func() uint64) {
	base := liveHeap()
	return func() uint64 {
		if now := liveHeap(); now > base {
			return now - base
		}
		return 0
	}
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// quiesce waits until the budget's use has not changed for half a second.
func quiesce(t *testing.T, ts *testServer) {
	t.Helper()
	last, since := ts.budget.Used(), time.Now()
	waitFor(t, time.Minute, "the budget's use to settle", func() bool {
		if u := ts.budget.Used(); u != last {
			last, since = u, time.Now()
		}
		return time.Since(since) >= 500*time.Millisecond
	})
}

// overhead is what a memory test allows the live heap to grow beyond the
// budget: connections and their buffers, goroutines, the test's own clients
// (19-28 MiB of growth were seen for a 24 MiB budget on a quiet machine, 48
// on a loaded one). Without the budget the stuck-receivers test pins about
// 96 MiB.
const overhead = 32 << 20

// budgetCheck fails t if the budget ever held more than its limit, or the
// heap grew by more than the limit plus overhead.
func budgetCheck(t *testing.T, ts *testServer, heapGrowth uint64) {
	t.Helper()

	peak, limit := ts.budget.Peak(), ts.budget.Limit()
	if peak > limit {
		t.Errorf("memory budget peaked at %d bytes, over its limit of %d", peak, limit)
	}
	if heapGrowth > uint64(limit)+overhead {
		t.Errorf("live heap grew by %d MiB, over the budget (%d MiB) plus %d MiB", heapGrowth>>20, limit>>20, overhead>>20)
	}
	t.Logf("memory budget peaked at %d of %d bytes; live heap grew by %.1f MiB", peak, limit, float64(heapGrowth)/(1<<20))
}

// bystanders runs a group of two that is not involved in what a test does:
// n messages from one to the other, which must all arrive, whole and in
// order, within a generous time. It returns when they have.
func bystanders(t *testing.T, ts *testServer, n, size int) time.Duration {
	t.Helper()
	s, r := dial(t, ts, "s", "bystanders"), dial(t, ts, "r", "bystanders")
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Write(context.Background(), websocket.MessageBinary, seqMsg(i, size)); err != nil {
				errc <- err
				return
			}
		}
	}()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, got, err := r.Read(ctx)
		cancel()
		if err != nil {
			select {
			case werr := <-errc:
				t.Fatalf("bystander message %d: %v (sender: %v)", i, err, werr)
			default:
			}
			t.Fatalf("bystander message %d: %v", i, err)
		}
		if !bytes.Equal(got, seqMsg(i, size)) {
			t.Fatalf("bystander message %d differs", i)
		}
	}
	return time.Since(start)
}

// TestMemoryBudgetStuckReceivers (issue 9, scenario 2): groups whose
// receivers read nothing, or very slowly, fill their queues. The budget holds,
// the receivers holding the most are evicted with 1008 "slow consumer", and
// a group not involved keeps flowing.
func TestMemoryBudgetStuckReceivers(t *testing.T) {
	const limit = 24 << 20
	ts := startServer(t, func(o *Options) {
		o.MemoryBudget = limit
		o.SendQueueBytes = 8 << 20 // 12 groups could pin 96 MiB
		o.WriteTimeout = time.Minute
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const groups = 12
	var senders []*websocket.Conn
	for i := range groups {
		g := fmt.Sprintf("stuck-%d", i)
		r := dialFrozen(t, ts, "r", g)
		senders = append(senders, dial(t, ts, "s", g))
		if i%2 == 1 {
			// A slow reader: a frame now and then.
			go func() {
				for ctx.Err() == nil {
					if _, _, _, err := r.readFrame(time.Second); err != nil && ctx.Err() == nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
	}
	heap := heapWatch()
	for _, s := range senders {
		go flood(ctx, s, 32<<10)
	}
	waitFor(t, 30*time.Second, "an eviction for memory", func() bool {
		return metricValue(t, ts, "wsproxy_evictions_total", "reason=memory") >= 1
	})
	d := bystanders(t, ts, 200, 1<<10)
	t.Logf("bystanders: 200 messages in %v; %v evictions for memory", d,
		metricValue(t, ts, "wsproxy_evictions_total", "reason=memory"))
	// The floods and the slow readers stop; what stays pinned is what the
	// receivers still hold. Measured with nothing moving, so that no buffer
	// freed between the two collections hides in a pool.
	cancel()
	quiesce(t, ts)
	budgetCheck(t, ts, heap())
}

// TestMemoryBudgetUnfinishedMessages (issue 9, scenario 3): senders that
// hold big unfinished messages and trickle the rest cannot pin more than the
// budget: they are closed with 1008 "message stalled", and a group not
// involved keeps flowing.
func TestMemoryBudgetUnfinishedMessages(t *testing.T) {
	const limit = 4 << 20
	ts := startServer(t, func(o *Options) {
		o.MemoryBudget = limit
		o.BufferBytes = 512 << 10
		o.MessageIdleTimeout = time.Minute
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const holders = 24 // 24 x 256 KiB: 6 MiB against 4
	heap := heapWatch()
	for i := range holders {
		g := fmt.Sprintf("trickle-%d", i)
		dial(t, ts, "r", g)
		s := dialRaw(t, ts, "s", g)
		go func() {
			if _, err := s.nc.Write(s.encode(false, opBinary, make([]byte, 250<<10))); err != nil {
				return
			}
			for ctx.Err() == nil {
				if _, err := s.nc.Write(s.encode(false, opCont, []byte{1})); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	waitFor(t, 30*time.Second, "a sender closed for memory", func() bool {
		return metricValue(t, ts, "wsproxy_evictions_total", "reason=memory_unfinished") >= 1
	})
	d := bystanders(t, ts, 200, 8<<10)
	t.Logf("bystanders: 200 messages in %v; %v senders closed for memory", d,
		metricValue(t, ts, "wsproxy_evictions_total", "reason=memory_unfinished"))
	// The tricklers stop, holding what they hold; measured with nothing
	// moving, as above.
	cancel()
	quiesce(t, ts)
	budgetCheck(t, ts, heap())
}

// fillQueue sends 64 KiB messages from s until member id of group has at
// least n bytes queued (its client reads nothing; the proxy relays as fast
// as s writes, so it overshoots by a message or two).
func fillQueue(t *testing.T, ts *testServer, s *websocket.Conn, group, id string, n int64) *session.Session {
	t.Helper()
	m := ts.Registry().Member(group, id)
	for i := 0; m.QueuedBytes() < n; i++ {
		if i > 10000 {
			t.Fatalf("%s/%s: %d bytes queued after %d messages", group, id, m.QueuedBytes(), i)
		}
		writeMsg(t, s, websocket.MessageBinary, seqMsg(i, 64<<10))
	}
	return m
}

func closing(m *session.Session) bool {
	select {
	case <-m.Closing():
		return true
	default:
		return false
	}
}

// TestMemoryVictimIsTheSlowest: of the receivers holding memory, the one
// closed is the largest holder among those that would take more than a
// window to drain at their pace: a receiver that keeps up is spared however
// much it has queued.
func TestMemoryVictimIsTheSlowest(t *testing.T) {
	ts := startServer(t, func(o *Options) {
		o.MemoryBudget = 256 << 20
		o.WriteTimeout = time.Minute
	})
	dialFrozen(t, ts, "big", "g1")
	dialFrozen(t, ts, "small", "g2")
	big := fillQueue(t, ts, dial(t, ts, "s", "g1"), "g1", "big", 2<<20)
	small := fillQueue(t, ts, dial(t, ts, "s", "g2"), "g2", "small", 512<<10)

	// big drains at 100 MiB/s: it would be done in a few tens of ms.
	ts.evictForMemory(map[*session.Session]*progress{
		big:   {rated: true, outRate: 100 << 20},
		small: {rated: true, outRate: 0},
	})
	if closing(big) || !closing(small) {
		t.Fatalf("closed: big %v, small %v; want small alone", closing(big), closing(small))
	}
	// Now big makes no progress either: it is the one.
	ts.evictForMemory(map[*session.Session]*progress{big: {rated: true, outRate: 0}})
	if !closing(big) {
		t.Fatal("big not closed")
	}
	if n := metricValue(t, ts, "wsproxy_evictions_total", "reason=memory"); n != 2 {
		t.Errorf("evictions{memory} = %v, want 2", n)
	}
}

// TestMemoryReserveForSmallHolders: with the budget spent down to its
// reserve by others, members whose messages pin little still get memory and
// keep flowing.
func TestMemoryReserveForSmallHolders(t *testing.T) {
	const limit = 8 << 20
	ts := startServer(t, func(o *Options) { o.MemoryBudget = limit })
	// Others hold everything but the reserve (and hold it for the test).
	taken := int64(limit - limit/8)
	if !ts.budget.TryAcquire(taken, false) {
		t.Fatal("could not take the budget")
	}
	defer ts.budget.Release(taken)
	d := bystanders(t, ts, 200, 1<<10)
	t.Logf("200 messages in %v from the reserve", d)
}
