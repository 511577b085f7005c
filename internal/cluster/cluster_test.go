package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/natstest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// cluster3 starts NATS and three nodes.
func cluster3(t *testing.T, o nodeOpts) (*natstest.Server, []*node) {
	t.Helper()
	ns := natstest.Start(t)
	nodes := []*node{startNode(t, ns, "n1", o), startNode(t, ns, "n2", o), startNode(t, ns, "n3", o)}
	return ns, nodes
}

// TestSizesAcrossNodes: one member on each of three nodes; each sends
// messages of every size around the chunk (64 KiB here) and buffer (1 MiB)
// thresholds, text and binary, and one of 64 MiB; every other member gets
// every message, whole, byte for byte, in its sender's order, never its own.
func TestSizesAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	const chunk, buffer = 64 << 10, 1 << 20
	// (Messages under 16 bytes carry no sender: only a sends them.)
	sizes := []int{16, chunk - 1, chunk, chunk + 1, 3*chunk + 7, buffer - 1, buffer, buffer + 1, 3*buffer + 5}
	cs := []*client{dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g"), dial(t, nodes[2], "c", "g")}
	waitMembers(t, "g", 3, nodes...)
	sent := map[string][]rcvd{"a": {{websocket.MessageBinary, nil}, {websocket.MessageText, []byte("x")}}}
	for _, c := range cs {
		for i, size := range sizes {
			typ, p := websocket.MessageBinary, payload(c.id, i, size)
			if i%2 == 1 {
				typ, p = websocket.MessageText, textPayload(c.id, i, size)
			}
			sent[c.id] = append(sent[c.id], rcvd{typ, p})
		}
	}
	big := rcvd{websocket.MessageBinary, payload("a", 99, 64<<20)}
	sent["a"] = append(sent["a"], big)
	done := make(chan error, len(cs))
	for _, c := range cs {
		go func() {
			for _, m := range sent[c.id] {
				if err := c.send(m.typ, m.data); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range cs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		want := 0
		for from, msgs := range sent {
			if from != c.id {
				want += len(msgs)
			}
		}
		c.waitCount(want, 2*time.Minute)
		if !judge(t, c, sent) {
			t.Errorf("%s: incomplete", c.id)
		}
	}
}

// sendAll sends msgs from c in order, in the background; the returned
// channel gets the first error (or nil).
func sendAll(c *client, msgs []rcvd) <-chan error {
	done := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := c.send(m.typ, m.data); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

func binMsgs(from string, n, size int) []rcvd {
	out := make([]rcvd, n)
	for i := range out {
		out[i] = rcvd{websocket.MessageBinary, payload(from, i, size)}
	}
	return out
}

// TestDuplicateIDAcrossNodes: an id that joins a group on another node
// replaces the first holder (4001), whatever the clocks; the newcomer gets
// what follows. The same id in another group is not touched.
func TestDuplicateIDAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	x1 := dial(t, nodes[0], "x", "g")
	other := dial(t, nodes[0], "x", "h")
	y := dial(t, nodes[2], "y", "g")
	waitMembers(t, "g", 2, nodes...)
	x2 := dial(t, nodes[1], "x", "g")
	if code := x1.waitClosed(20 * time.Second); code != statusReplaced {
		t.Fatalf("first x closed with %d, want 4001", code)
	}
	waitFor(t, 20*time.Second, "the registry to show x on n2", func() bool {
		node, _, ok := nodes[2].bus.NodeOf("g", "x")
		return ok && node == "n2"
	})
	msgs := binMsgs("y", 5, 100)
	if err := <-sendAll(y, msgs); err != nil {
		t.Fatal(err)
	}
	x2.waitCount(5, 20*time.Second)
	judge(t, x2, map[string][]rcvd{"y": msgs})
	if closed, _ := other.status(); closed {
		t.Fatal("x in another group was closed")
	}
}

// TestSimultaneousJoins: the same id joins one group on two nodes at the
// same instant, 20 times: exactly one of the two survives each time, never
// both, never neither.
func TestSimultaneousJoins(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	for round := range 20 {
		id := fmt.Sprintf("x%d", round)
		var a, b *client
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); a = dial(t, nodes[0], id, "g") }()
		go func() { defer wg.Done(); b = dial(t, nodes[1], id, "g") }()
		wg.Wait()
		waitFor(t, 20*time.Second, "one of the two to be replaced", func() bool {
			ca, _ := a.status()
			cb, _ := b.status()
			return ca || cb
		})
		// Whichever lost is closed with 4001; the winner stays, and
		// every node's registry agrees on where it is.
		loser, winner, where := a, b, "n2"
		if closed, _ := b.status(); closed {
			loser, winner, where = b, a, "n1"
		}
		if _, code := loser.status(); code != statusReplaced {
			t.Fatalf("round %d: loser closed with %d, want 4001", round, code)
		}
		for _, nd := range nodes {
			waitFor(t, 20*time.Second, "the registry to agree", func() bool {
				node, _, ok := nd.bus.NodeOf("g", id)
				return ok && node == where
			})
		}
		if closed, code := winner.status(); closed {
			t.Fatalf("round %d: both closed (winner: %d)", round, code)
		}
	}
}

// TestSenderDroppedMidStream: a sender on n1 drops in the middle of a
// streamed message: receivers on other nodes part-way through it are closed
// with 4002; a member of another group is untouched.
func TestSenderDroppedMidStream(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	a := dial(t, nodes[0], "a", "g")
	b := dial(t, nodes[1], "b", "g")
	h1, h2 := dial(t, nodes[1], "h1", "h"), dial(t, nodes[2], "h2", "h")
	waitMembers(t, "g", 2, nodes...)
	waitMembers(t, "h", 2, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := a.conn.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(payload("a", 0, 8<<20)); err != nil {
		t.Fatal(err)
	}
	// b is part-way once the proxy on n2 has relayed some of it.
	waitFor(t, 20*time.Second, "n2 to relay the start of the message", func() bool {
		return nodes[1].met.Registry != nil && counterValue(t, nodes[1], "wsproxy_bus_received_bytes_total") > 2<<20
	})
	a.conn.CloseNow()
	if code := b.waitClosed(20 * time.Second); code != 4002 {
		t.Fatalf("b closed with %d, want 4002", code)
	}
	msgs := binMsgs("h2", 3, 1000)
	if err := <-sendAll(h2, msgs); err != nil {
		t.Fatal(err)
	}
	h1.waitCount(3, 20*time.Second)
	judge(t, h1, map[string][]rcvd{"h2": msgs})
}

// TestTwoNodesStreamingIntoOneGroup: {S1, R0} on n1 and {S3, R2} on n3 each
// stream a message many rings long into the group at once. Without one
// order of streams across nodes each receiver would take its own node's
// first and both would wait on the other: both must complete.
func TestTwoNodesStreamingIntoOneGroup(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	s1, r0 := dial(t, nodes[0], "s1", "g"), dial(t, nodes[0], "r0", "g")
	s3, r2 := dial(t, nodes[2], "s3", "g"), dial(t, nodes[2], "r2", "g")
	waitMembers(t, "g", 4, nodes...)
	m1 := []rcvd{{websocket.MessageBinary, payload("s1", 0, 32<<20)}}
	m3 := []rcvd{{websocket.MessageBinary, payload("s3", 0, 32<<20)}}
	d1, d3 := sendAll(s1, m1), sendAll(s3, m3)
	for _, d := range []<-chan error{d1, d3} {
		select {
		case err := <-d:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("deadlock: a sender could not finish its message in 2 minutes")
		}
	}
	sent := map[string][]rcvd{"s1": m1, "s3": m3}
	for _, c := range []*client{r0, r2, s1, s3} {
		want := 2
		if c == s1 || c == s3 {
			want = 1
		}
		c.waitCount(want, 2*time.Minute)
		judge(t, c, sent)
	}
}

// TestSmallMaxPayload: NATS with a 64 KiB max_payload: the chunk shrinks to
// fit (--bus-chunk-bytes asks for more) and a 10 MiB message still crosses
// whole; a NATS whose max_payload is under 4 KiB is refused at start.
func TestSmallMaxPayload(t *testing.T) {
	ns := natstest.Start(t, natstest.MaxPayload(64<<10))
	big := nodeOpts{cluster: func(c *Config) { c.ChunkBytes = 256 << 10; c.WindowBytes = 1 << 20 }}
	n1, n2 := startNode(t, ns, "n1", big), startNode(t, ns, "n2", big)
	if n1.bus.chunk > 64<<10-maxHeaderBytes {
		t.Fatalf("chunk %d does not fit a 64 KiB max_payload", n1.bus.chunk)
	}
	a, b := dial(t, n1, "a", "g"), dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, n1, n2)
	msgs := []rcvd{{websocket.MessageBinary, payload("a", 0, 10<<20)}, {websocket.MessageText, textPayload("a", 1, 100<<10)}}
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	b.waitCount(2, time.Minute)
	judge(t, b, map[string][]rcvd{"a": msgs})

	tiny := natstest.Start(t, natstest.MaxPayload(2<<10))
	n, err := New(Config{URL: tiny.URL(), Name: "test", Node: "tiny", Heartbeat: testHeartbeat, PeerTimeout: testPeerTimeout,
		ChunkBytes: 64 << 10, WindowBytes: 1 << 20, WriteTimeout: time.Second}, n1.fwd, testLogger(t, "tiny"), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		n.Close()
		t.Fatal("joined through a NATS with a 2 KiB max_payload")
	}
}
