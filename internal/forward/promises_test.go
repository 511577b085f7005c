package forward

// Tests of the core's promises (SPEC sections 3-5) under hostile or unlucky
// clients: each was a reproduced break (issue 8) and fails on the code before
// its fix.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsproxy/wsproxy/internal/session"
)

// dialFrozen connects a raw client that reads nothing until the test makes
// it, then calls resume.
func dialFrozen(t testing.TB, ts *testServer, id, group string) *rawClient {
	t.Helper()
	return dialRaw(t, ts, id, group)
}

// resume is what a frozen client does when it starts reading again: it also
// sends a ping. On loopback a segment is 64 KiB, and a receiver whose window
// has been shut a long time may not announce it open again (it waits for
// room for a whole segment), leaving the proxy to its zero-window probes,
// which back off to many seconds: any segment from the client announces the
// window. (Over a network, segments are small and this does not arise.)
func (c *rawClient) resume() { c.frame(true, opPing, []byte("resume")) }

// counter is the value of a counter of ts's metrics with the given labels.
func counter(t testing.TB, ts *testServer, name string, labels map[string]string) float64 {
	t.Helper()
	return counterOf(ts, name, labels)
}

func counterOf(ts *testServer, name string, labels map[string]string) float64 {
	mfs, err := ts.metrics.Registry.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// metricIn is the number of messages the server has received.
func (ts *testServer) metricIn() int64 {
	var n int64
	for _, typ := range []string{"text", "binary"} {
		n += int64(counterOf(ts, "wsproxy_messages_in_total", map[string]string{"type": typ}))
	}
	return n
}

// seqMsg is message seq of size bytes: the sequence number, then filler.
func seqMsg(seq, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(seq))
	return b
}

// flood sends seqMsg messages from c until ctx ends or a write fails, and
// returns how many it sent.
func flood(ctx context.Context, c *websocket.Conn, size int) int {
	for seq := 0; ; seq++ {
		if c.Write(ctx, websocket.MessageBinary, seqMsg(seq, size)) != nil {
			return seq
		}
	}
}

// collect reads seqMsg messages from c until the text message "end", and
// returns their sequence numbers.
func collect(c *websocket.Conn, timeout time.Duration) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var seqs []int
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return seqs, fmt.Errorf("after %d messages: %w", len(seqs), err)
		}
		if typ == websocket.MessageText {
			if string(b) == "end" {
				return seqs, nil
			}
			continue
		}
		seqs = append(seqs, int(binary.BigEndian.Uint32(b)))
	}
}

// collectRaw is collect for a raw client: it also answers pings.
func collectRaw(c *rawClient, timeout time.Duration) ([]int, error) {
	deadline := time.Now().Add(timeout)
	var seqs []int
	var msg []byte
	for {
		fin, op, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return seqs, fmt.Errorf("after %d messages: %w", len(seqs), err)
		}
		switch op {
		case opPing:
			c.frame(true, opPong, p)
			continue
		case opPong:
			continue
		case opClose:
			return seqs, fmt.Errorf("after %d messages: closed %v", len(seqs), p)
		}
		msg = append(msg, p...)
		if !fin {
			continue
		}
		if op == opText && string(msg) == "end" || op == opCont && string(msg) == "end" {
			return seqs, nil
		}
		if len(msg) >= 4 {
			seqs = append(seqs, int(binary.BigEndian.Uint32(msg)))
		}
		msg = msg[:0]
	}
}

// contiguous checks that seqs is 0, 1, ... n-1.
func contiguous(seqs []int) error {
	for i, s := range seqs {
		if s != i {
			return fmt.Errorf("message %d has seq %d", i, s)
		}
	}
	return nil
}

// TestSenderEndsWhileParked: a message the proxy has read whole reaches every
// receiver it was meant for, or that receiver is closed, whatever ends its
// sender while the sender waits for a slow receiver. Here the slow receiver
// resumes in time (well within --write-timeout), so it must get every message
// the others got, and nobody may be closed.
func TestSenderEndsWhileParked(t *testing.T) {
	for _, how := range []string{"kick", "replace", "drop", "api"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, func(o *Options) {
				o.SendQueueBytes = 64 << 10
				o.WriteTimeout = time.Minute // X is slow, never evicted
			})
			var s *websocket.Conn
			var ss *session.Session
			if how != "api" {
				s = dial(t, ts, "s", "g")
				ss = ts.registry.Member("g", "s")
			}
			r1, r2 := dial(t, ts, "r1", "g"), dial(t, ts, "r2", "g")
			x := dialFrozen(t, ts, "x", "g")
			xs := ts.registry.Member("g", "x")

			type result struct {
				seqs []int
				err  error
			}
			results := make(chan result, 3)
			for _, r := range []*websocket.Conn{r1, r2} {
				go func() { seqs, err := collect(r, time.Minute); results <- result{seqs, err} }()
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const size = 16 << 10
			sent := make(chan int, 1)
			go func() {
				if how != "api" {
					sent <- flood(ctx, s, size)
					return
				}
				for seq := 0; ; seq++ {
					_, err := ts.Publish(ctx, "g", "", websocket.MessageBinary, bytes.NewReader(seqMsg(seq, size)))
					if err != nil {
						sent <- seq
						return
					}
				}
			}()

			// The sender waits for room in x's queue: x's queue is full,
			// and the sender has been waiting (for x, being last in id
			// order) for a while, not for a moment on r1 or r2.
			var lastIn int64 = -1
			var lastMove time.Time
			waitFor(t, time.Minute, "sender waiting for x", func() bool {
				in, waiting := ts.metricIn(), true
				if ss != nil {
					waiting, _ = ss.Parks()
				}
				if in != lastIn {
					lastIn, lastMove = in, time.Now()
				}
				return waiting && xs.QueuedBytes() > 64<<10-size && time.Since(lastMove) > 100*time.Millisecond
			})
			switch how {
			case "kick":
				if err := ts.Kick("g", "s"); err != nil {
					t.Fatal(err)
				}
			case "replace":
				c, _, err := websocket.Dial(context.Background(), ts.url+"?id=s&groupName=g", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
			case "drop":
				s.CloseNow()
			case "api":
				cancel()
			}

			// x resumes reading, well within --write-timeout.
			x.resume()
			go func() { seqs, err := collectRaw(x, time.Minute); results <- result{seqs, err} }()
			if how != "api" {
				// A dropped sender's reader still relays what was in
				// its socket, until it reads the end of it.
				waitFor(t, time.Minute, "the sender's reader done", func() bool {
					in, _ := ss.Activity()
					return !in && (how == "replace" || ts.registry.Member("g", "s") == nil)
				})
				cancel()
			}
			n := <-sent
			writeMsg(t, dial(t, ts, "end", "g"), websocket.MessageText, []byte("end"))

			var got [][]int
			for range 3 {
				r := <-results
				if r.err != nil {
					t.Fatalf("a receiver: %v (the sender sent %d)", r.err, n)
				}
				if err := contiguous(r.seqs); err != nil {
					t.Fatal(err)
				}
				got = append(got, r.seqs)
			}
			for _, seqs := range got[1:] {
				if len(seqs) != len(got[0]) {
					t.Fatalf("receivers got %d, %d and %d messages: one missed a message and was not closed",
						len(got[0]), len(got[1]), len(got[2]))
				}
			}
			if code, _, _ := xs.CloseStatus(); code != 0 {
				t.Fatalf("x closed with %d", code)
			}
		})
	}
}

// TestEvictedReceiverLearnsWhy: a receiver evicted as a slow consumer that
// resumes reading within --write-timeout of its eviction reads whole messages
// and then the close frame 1008 "slow consumer", not a bare TCP drop. Both
// policies.
func TestEvictedReceiverLearnsWhy(t *testing.T) {
	const writeTimeout = 10 * time.Second
	for _, policy := range []Policy{Backpressure, Disconnect} {
		for _, delay := range []time.Duration{500 * time.Millisecond, 2 * time.Second, 5 * time.Second} {
			t.Run(fmt.Sprintf("%v/%v", policy, delay), func(t *testing.T) {
				t.Parallel()
				ts := startServer(t, func(o *Options) {
					o.SlowConsumer = policy
					o.SendQueueBytes = 64 << 10
					o.WriteTimeout = writeTimeout
				})
				s := dial(t, ts, "s", "g")
				x := dialFrozen(t, ts, "x", "g")
				xs := ts.registry.Member("g", "x")
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go flood(ctx, s, 16<<10)

				waitFor(t, time.Minute, "x evicted", func() bool { code, _, _ := xs.CloseStatus(); return code != 0 })
				cancel() // (spare the machine: all that is left to x is in its socket)
				if code, reason, _ := xs.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "slow consumer" {
					t.Fatalf("x closed with %d %q", code, reason)
				}
				time.Sleep(delay) // the client pauses this long after its eviction
				x.resume()

				next := 0
				deadline := time.Now().Add(time.Minute)
				for {
					fin, op, p, err := x.readFrame(time.Until(deadline))
					if err != nil {
						t.Fatalf("after %d whole messages: %v, want the close frame 1008", next, err)
					}
					if op == opClose {
						if code := binary.BigEndian.Uint16(p); code != 1008 || string(p[2:]) != "slow consumer" {
							t.Fatalf("close frame %d %q", code, p[2:])
						}
						break
					}
					if op == opPing || op == opPong {
						continue
					}
					if !fin || op != opBinary {
						t.Fatalf("frame fin=%v op=%d: whole binary messages expected", fin, op)
					}
					if seq := int(binary.BigEndian.Uint32(p)); seq < next {
						t.Fatalf("seq %d after %d", seq, next)
					} else {
						next = seq + 1
					}
				}
				// The metric is counted as the connection's end is
				// logged, a moment after the client has the frame.
				waitFor(t, time.Minute, "wsproxy_close_frames_total{result=sent}", func() bool {
					return counter(t, ts, "wsproxy_close_frames_total", map[string]string{"result": "sent"}) >= 1
				})
			})
		}
	}
}

// TestEvictionWithinOneWriteTimeout: a receiver that reads nothing is evicted
// about one --write-timeout after its socket stops taking bytes, not two or
// three, and the parked sender goes on then.
func TestEvictionWithinOneWriteTimeout(t *testing.T) {
	t.Parallel()
	const writeTimeout = 3 * time.Second
	ts := startServer(t, func(o *Options) {
		o.SendQueueBytes = 64 << 10
		o.WriteTimeout = writeTimeout
	})
	s := dial(t, ts, "s", "g")
	ss := ts.registry.Member("g", "s")
	dialFrozen(t, ts, "x", "g")
	xs := ts.registry.Member("g", "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go flood(ctx, s, 16<<10)

	waitFor(t, time.Minute, "sender parked", func() bool { parked, _ := ss.Parks(); return parked })
	parkedAt := time.Now()
	waitFor(t, time.Minute, "x evicted", func() bool { code, _, _ := xs.CloseStatus(); return code != 0 })
	// The socket took its last bytes about when the sender parked (on a
	// busy machine the kernel may find a little more room for a while).
	// The old code refreshed the deadline whenever a timed-out write had
	// written anything: it took three timeouts here. How soon exactly is
	// measured where it is cheap to, in hijack's tests.
	took := time.Since(parkedAt)
	if took > 5*writeTimeout/2 {
		t.Fatalf("evicted %v after the sender parked, with --write-timeout %v", took, writeTimeout)
	}
	t.Logf("evicted %v after the sender parked, with --write-timeout %v", took, writeTimeout)
	if n := counter(t, ts, "wsproxy_evictions_total", map[string]string{"reason": "write_timeout"}); n != 1 {
		t.Fatalf("write_timeout evictions = %v", n)
	}
}

// TestSlowButSteadyUpload: a message arriving slowly but steadily in one
// frame is never "stalled" (any payload byte is progress), exactly as when it
// comes in many small frames.
func TestSlowButSteadyUpload(t *testing.T) {
	for _, frame := range []int{64 << 10, 1 << 10} {
		t.Run(fmt.Sprintf("frames of %d", frame), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, func(o *Options) {
				o.BufferBytes = 16 << 10
				o.MessageIdleTimeout = time.Second
			})
			s := dialRaw(t, ts, "s", "g")
			r := dial(t, ts, "r", "g")
			msg := make([]byte, 64<<10)
			for i := range msg {
				msg[i] = byte(i * 7)
			}
			// 8 KiB/s: the ring (2 x 16 KiB) takes 4 s to fill, four
			// times the idle timeout.
			go func() {
				var wire []byte
				for off := 0; off < len(msg); off += frame {
					op := byte(opBinary)
					if off > 0 {
						op = opCont
					}
					wire = append(wire, s.encode(off+frame >= len(msg), op, msg[off:off+frame])...)
				}
				for len(wire) > 0 {
					n := min(512, len(wire))
					if _, err := s.nc.Write(wire[:n]); err != nil {
						return
					}
					wire = wire[n:]
					time.Sleep(62 * time.Millisecond)
				}
			}()
			if _, got := readMsg(t, r, time.Minute); !bytes.Equal(got, msg) {
				t.Fatalf("got %d bytes, want the %d sent", len(got), len(msg))
			}
		})
	}
}

// TestParkedSenderNotStalled: a streaming sender parked behind a frozen
// receiver is never closed for the wait, however much longer than
// --message-idle-timeout it lasts; once the frozen receiver is gone the
// message goes on to the others. (The frozen receiver is kicked and drops
// its connection, rather than being left to --write-timeout, so that the
// write timeout can be long enough never to evict a reader the loaded
// machine starves for a while.)
func TestParkedSenderNotStalled(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		o.BufferBytes = 8 << 10
		o.MessageIdleTimeout = 300 * time.Millisecond
		o.WriteTimeout = time.Minute
	})
	s := dial(t, ts, "s", "g")
	ss := ts.registry.Member("g", "s")
	r := dial(t, ts, "r", "g")
	x := dialFrozen(t, ts, "x", "g")
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	wrote := make(chan error, 1)
	go func() { wrote <- s.Write(context.Background(), websocket.MessageBinary, msg) }()
	got := make(chan []byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, b, _ := r.Read(ctx)
		got <- b
	}()
	// Parked on x for over three idle timeouts (which the stall watch
	// judges once per timeout), then x goes.
	waitFor(t, time.Minute, "the sender parked", func() bool { p, _ := ss.Parks(); return p })
	time.Sleep(time.Second)
	if err := ts.Kick("g", "x"); err != nil {
		t.Fatal(err)
	}
	x.drop() // its writer, in the middle of a frame, lets go of the ring
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("got %d bytes", len(b))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	writeMsg(t, s, websocket.MessageText, []byte("still here"))
	if _, got := readMsg(t, r, time.Minute); string(got) != "still here" {
		t.Fatalf("got %q", got)
	}
}

// TestPingInFlightWhenParked: a keepalive ping already sent when the sender
// parks (its reader cannot read the pong while it waits) is never held
// against the sender. Several frozen receivers in turn park it several times.
func TestPingInFlightWhenParked(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		o.SendQueueBytes = 64 << 10
		// Long: nobody is evicted by it; the frozen receivers are kicked.
		o.WriteTimeout = time.Minute
		o.PingInterval = 20 * time.Millisecond
		o.PingTimeout = 300 * time.Millisecond
	})
	s := dial(t, ts, "s", "g")
	ss := ts.registry.Member("g", "s")
	r := dial(t, ts, "r", "g")
	type result struct {
		seqs []int
		err  error
	}
	results := make(chan result, 1)
	go func() { seqs, err := collect(r, 2*time.Minute); results <- result{seqs, err} }()
	s.CloseRead(context.Background()) // the sender's client answers pings

	// The sender writes until told to stop, then says "end" itself (its
	// messages reach r in the order it sent them).
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		seq := 0
		defer func() { sent <- seq }()
		for {
			select {
			case <-stop:
				_ = s.Write(context.Background(), websocket.MessageText, []byte("end"))
				return
			default:
			}
			if s.Write(context.Background(), websocket.MessageBinary, seqMsg(seq, 16<<10)) != nil {
				return
			}
			seq++
		}
	}()
	for round := range 5 {
		id := fmt.Sprintf("x%d", round)
		x := dialFrozen(t, ts, id, "g")
		// Parked on x, with pings going out, for over three ping
		// timeouts; then x goes.
		waitFor(t, time.Minute, "the sender parked", func() bool { p, _ := ss.Parks(); return p })
		time.Sleep(time.Second)
		// On a busy machine the proxy may have written x a ping before
		// x's buffers filled, and closed x (frozen: no pong) itself.
		if err := ts.Kick("g", id); err != nil && !errors.Is(err, ErrNoMember) {
			t.Fatal(err)
		}
		x.drop()
		if code, reason, _ := ss.CloseStatus(); code != 0 {
			t.Fatalf("round %d: sender closed with %d %q", round, code, reason)
		}
	}
	close(stop)
	seq := <-sent
	if code, reason, _ := ss.CloseStatus(); code != 0 {
		t.Fatalf("sender closed with %d %q", code, reason)
	}
	res := <-results
	if err := contiguous(res.seqs); err != nil || len(res.seqs) != seq || res.err != nil {
		t.Fatalf("r got %d of %d: %v (collect: %v)", len(res.seqs), seq, err, res.err)
	}
}

// TestTrickleCannotHoldGroup: a streamed message that crawls while others
// wait behind it closes its sender with 1008 "message stalled", and
// receivers part-way through it get 4002, within a few idle timeouts.
func TestTrickleCannotHoldGroup(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		o.BufferBytes = 16 << 10
		o.MessageIdleTimeout = 500 * time.Millisecond
		o.WriteTimeout = time.Minute
	})
	tr := dialRaw(t, ts, "trickler", "g")
	b := dial(t, ts, "b", "g")
	r := dial(t, ts, "r", "g")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tr.frame(false, opBinary, make([]byte, 20<<10))
		for range 1200 { // one byte every 50 ms, for at most a minute
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := tr.nc.Write(tr.encode(false, opCont, []byte{1})); err != nil {
				return
			}
		}
	}()
	waitFor(t, time.Minute, "the trickle queued for r", func() bool { return rStarted(ts) })
	writeMsg(t, b, websocket.MessageText, []byte("waiting behind"))
	expectClose(t, r, session.StatusSenderAborted, time.Minute)
	tr.expectClose(1008, time.Minute)
}

// rStarted reports whether something is queued for r.
func rStarted(ts *testServer) bool {
	m := ts.registry.Member("g", "r")
	return m != nil && m.Pending() > 0
}

// TestReplacedSenderMessageAbandoned: a message its sender had not finished
// when it was replaced (4001) is abandoned: nobody gets it, least of all the
// connection that replaced it with the same id.
func TestReplacedSenderMessageAbandoned(t *testing.T) {
	for _, size := range []int{5000, 40 << 10} { // buffered, streamed
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			streamed := size > 16<<10
			ts := startServer(t, func(o *Options) { o.BufferBytes = 16 << 10 })
			old := dialRaw(t, ts, "alice", "g")
			olds := ts.registry.Member("g", "alice")
			bob := dialRaw(t, ts, "bob", "g")

			old.frame(false, opBinary, make([]byte, size-1))
			waitFor(t, time.Minute, "alice's message started", func() bool { in, _ := olds.Activity(); return in })
			if streamed {
				// bob is part-way through it.
				if fin, op, _, err := bob.readFrame(time.Minute); err != nil || fin || op != opBinary {
					t.Fatalf("bob's first frame: fin=%v op=%d %v", fin, op, err)
				}
			}
			carol := dial(t, ts, "carol", "g") // joins after it started: not a recipient
			c, _, err := websocket.Dial(context.Background(), ts.url+"?id=alice&groupName=g", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			waitFor(t, time.Minute, "alice replaced", func() bool { return ts.registry.Member("g", "alice") != olds })
			old.frame(true, opCont, []byte{1}) // the old connection finishes it
			waitFor(t, time.Minute, "the old reader done", func() bool { in, _ := olds.Activity(); return !in })

			writeMsg(t, carol, websocket.MessageText, []byte("sentinel"))
			expectSentinel(t, c, "sentinel")
			if streamed {
				// bob had started the streamed message: it is closed
				// with 4002, never given a message cut short.
				bob.expectClose(int(session.StatusSenderAborted), time.Minute)
				return
			}
			if fin, op, p, err := bob.readFrame(time.Minute); err != nil || !fin || op != opText || string(p) != "sentinel" {
				t.Fatalf("bob got fin=%v op=%d %d bytes (%v), want the sentinel first", fin, op, len(p), err)
			}
		})
	}
}

// TestInvalidCloseReason: a close frame whose reason is not UTF-8 fails the
// connection with 1007 (RFC 6455 section 8.1; Autobahn 7.5.1), instead of
// being echoed as a clean close.
func TestInvalidCloseReason(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	c := dialRaw(t, ts, "c", "g")
	c.frame(true, opClose, []byte{0x03, 0xe8, 0xff, 0xfe})
	c.expectClose(1007, time.Minute)
}

// TestDisconnectEvictsAtOnce: under disconnect, a receiver whose queue is
// full is evicted at once ("queue_full"), never left to the write timeout,
// and never skipped silently.
func TestDisconnectEvictsAtOnce(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		o.SlowConsumer = Disconnect
		o.SendQueueBytes = 64 << 10
		o.WriteTimeout = 10 * time.Minute
	})
	s := dial(t, ts, "s", "g")
	x := dialFrozen(t, ts, "x", "g")
	xs := ts.registry.Member("g", "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go flood(ctx, s, 16<<10)
	waitFor(t, time.Minute, "x evicted", func() bool { code, _, _ := xs.CloseStatus(); return code != 0 })
	if n := counter(t, ts, "wsproxy_evictions_total", map[string]string{"reason": "queue_full"}); n != 1 {
		t.Fatalf("queue_full evictions = %v", n)
	}
	x.expectClose(1008, time.Minute)
}

// TestStreamedTextEndingMidRune: a streamed text message whose last bytes
// are the start of a character is invalid UTF-8: its sender gets 1007, and
// receivers part-way through it 4002.
func TestStreamedTextEndingMidRune(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.BufferBytes = 8 << 10 })
	s := dialRaw(t, ts, "s", "g")
	r := dial(t, ts, "r", "g")
	s.frame(true, opText, append(bytes.Repeat([]byte("a"), 20<<10), 0xe2, 0x82))
	s.expectClose(1007, time.Minute)
	expectClose(t, r, session.StatusSenderAborted, time.Minute)
}

// TestDrainWaitsForUnreadMessages: a message already in a sender's socket
// when the drain starts, which its reader has not woken up for yet, is still
// delivered before the 1001: the drain ends only after a whole quiet period.
// (Not parallel: it sets a package hook.)
func TestDrainWaitsForUnreadMessages(t *testing.T) {
	draining := make(chan struct{})
	// a's reader, back for its next message after its first, dozes off
	// until the drain has begun (and a little after), as a busy machine's
	// scheduler may.
	testHookNextMessage = func(sess *session.Session) {
		if _, marks := sess.Activity(); sess.ID != "a" || marks < 2 {
			return
		}
		<-draining
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { testHookNextMessage = nil }) // after the server's cleanup
	ts := startServer(t)
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	writeMsg(t, a, websocket.MessageText, []byte("first"))
	expectSentinel(t, b, "first")
	writeMsg(t, a, websocket.MessageText, []byte("just before the signal"))

	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ts.Shutdown(ctx)
	}()
	waitFor(t, time.Minute, "draining", ts.Draining)
	close(draining)
	if _, got := readMsg(t, b, time.Minute); string(got) != "just before the signal" {
		t.Fatalf("got %q", got)
	}
	expectClose(t, b, websocket.StatusGoingAway, time.Minute)
	<-done
}

// TestSlowReaderSeesItsCloseFrame: a receiver still reading, slowly, what
// was sent before its close frame (and sending pings meanwhile) is not cut
// off after the close grace: its next ping would be answered with a reset,
// which loses the close frame from its receive buffer. It is waited for
// while it keeps taking bytes.
func TestSlowReaderSeesItsCloseFrame(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) { o.CloseGrace = 500 * time.Millisecond })
	s := dial(t, ts, "s", "g")
	x := dialFrozen(t, ts, "x", "g")
	xs := ts.registry.Member("g", "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go flood(ctx, s, 16<<10)
	waitFor(t, time.Minute, "x's socket and queue full", func() bool { return xs.QueuedBytes() > 4<<20 })
	cancel()
	if err := ts.Kick("g", "x"); err != nil {
		t.Fatal(err)
	}
	// x reads 16 KiB every 20 ms, under 1 MiB/s: what its socket buffers
	// hold takes well over the close grace.
	x.resume()
	start := time.Now()
	deadline := time.Now().Add(time.Minute)
	for {
		_, op, p, err := x.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %v: %v, want the close frame 4003", time.Since(start), err)
		}
		if op == opClose {
			if code := binary.BigEndian.Uint16(p); code != 4003 {
				t.Fatalf("close frame %d", code)
			}
			t.Logf("close frame after %v of slow reading", time.Since(start))
			return
		}
		time.Sleep(20 * time.Millisecond)
		x.frame(true, opPing, []byte("still here")) // as a keepalive would
	}
}
