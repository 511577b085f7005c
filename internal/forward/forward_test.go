package forward

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestFanOutNoEchoIsolation: a message reaches every other member of its
// group, never its sender, never another group.
func TestFanOutNoEchoIsolation(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	a := dial(t, ts, "a", "g1")
	b := dial(t, ts, "b", "g1")
	c := dial(t, ts, "c", "g1")
	other := dial(t, ts, "a", "g2") // same id, different group: a different session

	writeMsg(t, a, websocket.MessageText, []byte("from a"))
	writeMsg(t, other, websocket.MessageBinary, []byte("from g2"))
	writeMsg(t, b, websocket.MessageText, []byte("from b"))

	// Order across senders is not promised: compare as sets.
	for _, tc := range []struct {
		c    *websocket.Conn
		want []string
	}{
		{b, []string{"from a"}},
		{c, []string{"from a", "from b"}},
		{a, []string{"from b"}},
	} {
		want := map[string]bool{}
		for _, w := range tc.want {
			want[w] = true
		}
		for range tc.want {
			_, got := readMsg(t, tc.c, 2*time.Second)
			if !want[string(got)] {
				t.Fatalf("got %q, want one of %v", got, tc.want)
			}
			delete(want, string(got))
		}
	}
	// Sentinels: if a or other had received anything they should not, it
	// would arrive before these.
	writeMsg(t, c, websocket.MessageText, []byte("sentinel"))
	if _, got := readMsg(t, a, 5*time.Second); string(got) != "sentinel" {
		t.Fatalf("a got %q before the sentinel: echo or misdelivery", got)
	}
	other2 := dial(t, ts, "b", "g2")
	writeMsg(t, other2, websocket.MessageText, []byte("sentinel g2"))
	if _, got := readMsg(t, other, 5*time.Second); string(got) != "sentinel g2" {
		t.Fatalf("other got %q before the sentinel: misdelivery across groups", got)
	}
}

// TestByteExact: text and binary messages of random sizes, 0 bytes and sizes
// around the buffering threshold included, arrive with type and bytes intact.
func TestByteExact(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.BufferBytes = 64 << 10 })
	s := dial(t, ts, "s", "g")
	r1 := dial(t, ts, "r1", "g")
	r2 := dial(t, ts, "r2", "g")

	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 125, 126, 65535, 65536, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10}
	for range 30 {
		sizes = append(sizes, rng.IntN(300<<10))
	}
	type msg struct {
		typ websocket.MessageType
		b   []byte
	}
	var sent []msg
	for i, n := range sizes {
		m := msg{typ: websocket.MessageBinary, b: make([]byte, n)}
		if i%2 == 0 {
			m.typ = websocket.MessageText
			for j := range m.b {
				m.b[j] = byte('a' + rng.IntN(26))
			}
		} else {
			for j := range m.b {
				m.b[j] = byte(rng.Uint32())
			}
		}
		sent = append(sent, m)
	}
	go func() {
		for _, m := range sent {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = s.Write(ctx, m.typ, m.b)
			cancel()
		}
	}()
	// Read both receivers at once: one left unread would rightly be evicted.
	var wg sync.WaitGroup
	for _, r := range []*websocket.Conn{r1, r2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i, m := range sent {
				typ, got, err := r.Read(ctx)
				if err != nil || typ != m.typ || !bytes.Equal(got, m.b) {
					t.Errorf("message %d (%d bytes %v): got %v, %d bytes, %v", i, len(m.b), m.typ, typ, len(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestFragmentedMessageArrivesWhole: a message sent as many frames arrives
// as one message, below and above the buffering threshold.
func TestFragmentedMessageArrivesWhole(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.BufferBytes = 4 << 10 })
	s := dial(t, ts, "s", "g")
	r := dial(t, ts, "r", "g")
	for _, total := range []int{1000, 100 << 10} {
		want := bytes.Repeat([]byte("0123456789"), total/10)
		w, err := s.Writer(context.Background(), websocket.MessageText)
		if err != nil {
			t.Fatal(err)
		}
		for p := want; len(p) > 0; {
			n := min(len(p), 777)
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(nil); err != nil { // empty fragments are legal
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		typ, got := readMsg(t, r, 5*time.Second)
		if typ != websocket.MessageText || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: got %v %d bytes", total, typ, len(got))
		}
	}
}

// TestPerSenderOrder: thousands of messages from several concurrent senders
// reach every receiver in each sender's order, with no gaps.
func TestPerSenderOrder(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.BufferBytes = 8 << 10 })
	const senders, receivers, perSender = 4, 3, 1500
	// A stall is a read or write that makes no progress for this long; the
	// whole run may take much longer on a busy machine.
	const stall = 30 * time.Second
	var sconns, rconns []*websocket.Conn
	for i := range senders {
		sconns = append(sconns, dial(t, ts, fmt.Sprintf("s%d", i), "g"))
	}
	for i := range receivers {
		rconns = append(rconns, dial(t, ts, fmt.Sprintf("r%d", i), "g"))
	}
	// Every goroutine reports with t.Errorf and returns, so a failure never
	// blocks the others. Each read and write is bounded, so wg.Wait returns.
	var wg sync.WaitGroup
	var written [senders]atomic.Int64
	// Senders also receive each other's messages; drain them so they never
	// hold anyone back, and check their order too.
	check := func(name string, c *websocket.Conn, self int) {
		defer wg.Done()
		next := make([]uint32, senders)
		want := perSender * senders
		if self >= 0 {
			want -= perSender
		}
		for got := range want {
			ctx, cancel := context.WithTimeout(context.Background(), stall)
			_, b, err := c.Read(ctx)
			stalled := ctx.Err() != nil
			cancel()
			if err != nil {
				what := "read failed"
				if stalled {
					what = fmt.Sprintf("stalled: nothing for %v", stall)
				}
				sent := make([]int64, senders)
				for i := range written {
					sent[i] = written[i].Load()
				}
				t.Errorf("%s %s after %d of %d messages (next seq per sender %v; written per sender %v): %v",
					name, what, got, want, next, sent, err)
				return
			}
			from, seq := int(b[0]), binary.BigEndian.Uint32(b[1:5])
			if from == self {
				t.Errorf("%s got its own message", name)
				return
			}
			if seq != next[from] {
				t.Errorf("%s: from s%d got seq %d, want %d", name, from, seq, next[from])
				return
			}
			next[from]++
		}
	}
	for i, c := range rconns {
		wg.Add(1)
		go check(fmt.Sprintf("r%d", i), c, -1)
	}
	for i, c := range sconns {
		wg.Add(1)
		go check(fmt.Sprintf("s%d", i), c, i)
	}
	for i, c := range sconns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for seq := range perSender {
				b := make([]byte, 5+rng.IntN(20<<10)) // some streamed, most not
				b[0] = byte(i)
				binary.BigEndian.PutUint32(b[1:5], uint32(seq))
				ctx, cancel := context.WithTimeout(context.Background(), stall)
				err := c.Write(ctx, websocket.MessageBinary, b)
				stalled := ctx.Err() != nil
				cancel()
				if err != nil {
					what := "write failed"
					if stalled {
						what = fmt.Sprintf("stalled: not written within %v", stall)
					}
					t.Errorf("s%d %s at message %d of %d: %v", i, what, seq, perSender, err)
					return
				}
				written[i].Add(1)
			}
		}()
	}
	wg.Wait()
}

// TestDuplicateIDReplaces: the old connection is closed with 4001, the
// newcomer receives, and the old session's cleanup never removes the new one.
func TestDuplicateIDReplaces(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	old := dial(t, ts, "dup", "g")
	first := ts.registry.Member("g", "dup")
	sender := dial(t, ts, "sender", "g")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	newer, _, err := websocket.Dial(ctx, wsURL(ts.url, "dup", "g"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.CloseNow()
	expectClose(t, old, 4001, 5*time.Second)

	// Wait until the old connection's handler has finished: it counts the
	// close after its leave() has run. Then check the newcomer is still the
	// member and receives.
	waitFor(t, 10*time.Second, "the old connection's end to be counted", func() bool {
		return metricValue(t, ts, "wsproxy_closes_total", "code=4001") == 1
	})
	if m := ts.registry.Member("g", "dup"); m == nil || m == first {
		t.Fatalf("member after replacement = %v, want the newcomer", m)
	}
	writeMsg(t, sender, websocket.MessageText, []byte("to the newcomer"))
	if _, got := readMsg(t, newer, 2*time.Second); string(got) != "to the newcomer" {
		t.Fatalf("newcomer got %q", got)
	}
	if n := len(ts.registry.Get("g").Members()); n != 2 {
		t.Fatalf("group has %d members, want 2", n)
	}
}

// TestEmptyGroupsDisappear: a group exists while it has members.
func TestEmptyGroupsDisappear(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	a := dial(t, ts, "a", "transient")
	b := dial(t, ts, "b", "transient")
	a.Close(websocket.StatusNormalClosure, "")
	b.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 5*time.Second, "group removed", func() bool { return ts.registry.Get("transient") == nil })
	if n := ts.registry.Count(); n != 0 {
		t.Fatalf("registry counts %d groups", n)
	}
}

// TestJoinLeaveStorm: members joining and leaving (cleanly and abruptly)
// during heavy fan-out do not disturb the stable members, which get every
// message in order; the group ends with exactly the stable members.
func TestJoinLeaveStorm(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	sender := dial(t, ts, "sender", "storm")
	stable := []*websocket.Conn{dial(t, ts, "st1", "storm"), dial(t, ts, "st2", "storm")}
	const minJoins = 300

	var joins atomic.Int64
	stop := make(chan struct{})
	var churn sync.WaitGroup
	for w := range 4 {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, _, err := websocket.Dial(ctx, wsURL(ts.url, fmt.Sprintf("churn%d-%d", w, i%3), "storm"), nil)
				cancel()
				if err != nil {
					continue
				}
				joins.Add(1)
				if i%2 == 0 {
					c.Close(websocket.StatusNormalClosure, "")
				} else {
					c.CloseNow() // abrupt
				}
			}
		}()
	}
	// Send until the storm has seen enough joins, then an end marker.
	sent := make(chan uint32, 1)
	go func() {
		var i uint32
		for ; joins.Load() < minJoins || i < 1000; i++ {
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // leave the handshakes some CPU
			}
			b := binary.BigEndian.AppendUint32(nil, i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = sender.Write(ctx, websocket.MessageBinary, b)
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = sender.Write(ctx, websocket.MessageText, []byte("end"))
		cancel()
		sent <- i
	}()
	for _, c := range stable {
		for i := uint32(0); ; i++ {
			typ, b := readMsg(t, c, 20*time.Second)
			if typ == websocket.MessageText {
				break
			}
			if got := binary.BigEndian.Uint32(b); got != i {
				t.Fatalf("got %d, want %d", got, i)
			}
		}
	}
	close(stop)
	churn.Wait()
	t.Logf("%d messages fanned out during %d joins and leaves", <-sent, joins.Load())
	waitFor(t, 5*time.Second, "only stable members left", func() bool {
		g := ts.registry.Get("storm")
		return g != nil && len(g.Members()) == 3
	})
}

// TestNothingOfItsOwn: the proxy sends nothing on the data connection but
// what members send: not on joining, not on another member's joining or
// leaving. The first thing each member gets is the other's sentinel.
func TestNothingOfItsOwn(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	a := dial(t, ts, "a", "quiet")
	b := dial(t, ts, "b", "quiet")
	c := dial(t, ts, "c", "quiet")
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 5*time.Second, "c to leave", func() bool { return ts.registry.Member("quiet", "c") == nil })
	writeMsg(t, b, websocket.MessageText, []byte("from b"))
	writeMsg(t, a, websocket.MessageText, []byte("from a"))
	for _, tc := range []struct {
		c    *websocket.Conn
		want string
	}{{a, "from b"}, {b, "from a"}} {
		if typ, got := readMsg(t, tc.c, 5*time.Second); typ != websocket.MessageText || string(got) != tc.want {
			t.Fatalf("got %v %q first, want %q: the proxy sent something of its own", typ, got, tc.want)
		}
	}
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
