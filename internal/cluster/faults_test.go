package cluster

import (
	"context"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/natstest"
)

// Every test here drives real faults (a cut link, a killed node, NATS
// stopped, a lost chunk) while messages flow, and judges every receiver's
// log: complete, or a gap-free prefix ended by a close code the case
// allows. Never a gap without a close.

// traffic is senders sending numbered messages until stopped.
type traffic struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	sent map[string][]rcvd
	cs   []*client
}

// ended is the senders whose connection has ended.
func (tr *traffic) ended() map[string]bool {
	out := map[string]bool{}
	for _, c := range tr.cs {
		if !isOpen(c) {
			out[c.id] = true
		}
	}
	return out
}

// flow starts each client sending a 200-byte message every few
// milliseconds until t.halt; only messages the proxy accepted count as sent.
func flow(cs ...*client) *traffic {
	tr := &traffic{stop: make(chan struct{}), sent: map[string][]rcvd{}, cs: cs}
	for _, c := range cs {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				m := rcvd{websocket.MessageBinary, payload(c.id, i, 200)}
				if c.send(m.typ, m.data) != nil {
					return
				}
				tr.mu.Lock()
				tr.sent[c.id] = append(tr.sent[c.id], m)
				tr.mu.Unlock()
			}
		}()
	}
	return tr
}

func (tr *traffic) halt() map[string][]rcvd {
	close(tr.stop)
	tr.wg.Wait()
	return tr.sent
}

// settle waits until every receiver in cs is closed, or has every message
// of every sender that is not in ended (the senders closed while sending,
// whose last messages their proxy may never have read).
func settle(t *testing.T, sent map[string][]rcvd, ended map[string]bool, cs ...*client) {
	t.Helper()
	for _, c := range cs {
		waitFor(t, time.Minute, c.id+" to get everything or be closed", func() bool {
			if closed, _ := c.status(); closed {
				return true
			}
			got := c.bySender()
			for from, msgs := range sent {
				if from != c.id && !ended[from] && got[crc32.ChecksumIEEE([]byte(from))] < len(msgs) {
					return false
				}
			}
			return true
		})
	}
}

func isOpen(c *client) bool {
	closed, _ := c.status()
	return !closed
}

// TestFirstChunkLost: the only chunk n1 ever sends to group g is lost, then
// n1's link drops and comes back. n2 never had any of n1's chunks of g, so
// only the sync n1 sends on its way back can show the loss: b, a member of
// g on n2 all along, is closed with 4004, not left open without the message.
func TestFirstChunkLost(t *testing.T) {
	var dropped atomic.Bool
	testDropChunk = func(group string, seq uint64) bool {
		return group == "g" && seq == 1 && dropped.CompareAndSwap(false, true)
	}
	t.Cleanup(func() { testDropChunk = nil })
	_, nodes := cluster3(t, nodeOpts{})
	a, b := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g")
	waitMembers(t, "g", 2, nodes...)
	if err := <-sendAll(a, binMsgs("a", 1, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the chunk to be dropped", dropped.Load)
	nodes[0].fault.Cut()
	waitFor(t, 20*time.Second, "n1 not ready", func() bool { return nodes[0].fwd.Ready() != nil })
	nodes[0].fault.Pass()
	waitFor(t, 20*time.Second, "n1 ready again", func() bool { return nodes[0].fwd.Ready() == nil })
	if code := b.waitClosed(20 * time.Second); code != statusMissed {
		t.Errorf("b closed with %d %q, want 4004", code, b.reason)
	}
	judge(t, b, map[string][]rcvd{}, statusMissed)
}

// TestForcedGap: a chunk of group g is lost between n1 and the others: the
// members of g on n2 and n3 are closed with 4004; group h is untouched.
func TestForcedGap(t *testing.T) {
	var dropped atomic.Bool
	testDropChunk = func(group string, seq uint64) bool {
		return group == "g" && seq == 5 && dropped.CompareAndSwap(false, true)
	}
	t.Cleanup(func() { testDropChunk = nil })
	_, nodes := cluster3(t, nodeOpts{})
	a, b, c := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g"), dial(t, nodes[2], "c", "g")
	h1, h2 := dial(t, nodes[0], "h1", "h"), dial(t, nodes[1], "h2", "h")
	waitMembers(t, "g", 3, nodes...)
	waitMembers(t, "h", 2, nodes...)
	msgs := binMsgs("a", 10, 100)
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	hm := binMsgs("h1", 10, 100)
	if err := <-sendAll(h1, hm); err != nil {
		t.Fatal(err)
	}
	sent := map[string][]rcvd{"a": msgs}
	for _, r := range []*client{b, c} {
		if code := r.waitClosed(20 * time.Second); code != statusMissed {
			t.Errorf("%s closed with %d, want 4004", r.id, code)
		}
		judge(t, r, sent, statusMissed)
	}
	h2.waitCount(10, 20*time.Second)
	judge(t, h2, map[string][]rcvd{"h1": hm})
	if v := counterValue(t, nodes[1], "wsproxy_bus_losses_total"); v < 1 {
		t.Errorf("n2 counted %v losses, want at least 1", v)
	}
}

// TestForcedSlowConsumer: n2's data subscription can hold one pending
// chunk and its dispatcher is slow: NATS drops chunks, and n2 closes the
// members it cannot vouch for with 4004. Never silently.
func TestForcedSlowConsumer(t *testing.T) {
	testSlowDispatch = func(n *Node) {
		if n.cfg.Node == "n2" {
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() { testSlowDispatch = nil })
	ns := natstest.Start(t)
	n1 := startNode(t, ns, "n1", nodeOpts{})
	n2 := startNode(t, ns, "n2", nodeOpts{cluster: func(c *Config) { c.PendingMessages = 1 }})
	a, b := dial(t, n1, "a", "g"), dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, n1, n2)
	msgs := binMsgs("a", 2000, 64)
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	settle(t, map[string][]rcvd{"a": msgs}, nil, b)
	if judge(t, b, map[string][]rcvd{"a": msgs}, statusMissed) {
		t.Fatal("b got everything: the slow consumer was not forced")
	}
	if v := labelValue(t, n2, "wsproxy_bus_losses_total", "reason", "nats_slow"); v < 1 {
		t.Errorf("n2 counted %v NATS slow consumers, want at least 1", v)
	}
}

// TestPeerKnownFromItsMembers: a node whose heartbeats never arrive (it
// died before its first one reached the others) is still declared lost:
// the others know it from its members in the registry.
func TestPeerKnownFromItsMembers(t *testing.T) {
	testNoHeartbeat = func(n *Node) bool { return n.cfg.Node == "n2" }
	t.Cleanup(func() { testNoHeartbeat = nil })
	_, nodes := cluster3(t, nodeOpts{})
	a, b := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g")
	waitMembers(t, "g", 2, nodes...)
	_ = b
	nodes[1].kill()
	if code := a.waitClosed(30 * time.Second); code != statusMissed {
		t.Errorf("a closed with %d, want 4004", code)
	}
}

// TestLostTailShowsAsGap: n2's link goes silent while its member sends
// (what it publishes is held, then thrown away when the link is cut), and
// comes back before the peer timeout. Nothing more is sent from n2 to the
// group afterwards, so only the sync n2 sends once back can show the loss:
// n1's member is closed with 4004, never left open with a gap.
func TestLostTailShowsAsGap(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	a, b := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g")
	waitMembers(t, "g", 2, nodes...)
	before := binMsgs("b", 5, 100)
	if err := <-sendAll(b, before); err != nil {
		t.Fatal(err)
	}
	a.waitCount(5, 20*time.Second)
	nodes[1].fault.Blackhole()
	lost := make([]rcvd, 5)
	for i := range lost {
		lost[i] = rcvd{websocket.MessageBinary, payload("b", 5+i, 100)}
	}
	if err := <-sendAll(b, lost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n2 to publish b's messages", func() bool {
		return counterValue(t, nodes[1], "wsproxy_bus_published_messages_total") >= 10
	})
	nodes[1].fault.Cut()
	waitFor(t, 20*time.Second, "n2 not ready", func() bool { return nodes[1].fwd.Ready() != nil })
	nodes[1].fault.Pass()
	waitFor(t, 20*time.Second, "n2 ready again", func() bool { return nodes[1].fwd.Ready() == nil })
	if code := a.waitClosed(20 * time.Second); code != statusMissed {
		t.Errorf("a closed with %d, want 4004", code)
	}
	judge(t, a, map[string][]rcvd{"b": append(before, lost...)}, statusMissed)
}

// TestNodeKilledMidStream: n1 dies while a member there streams a message to
// n2: part-way receivers get 4002 or 4004; members of groups n1 shared get
// 4004 once n1 is declared lost; a group without n1 is untouched; the dead
// node's registry entries are purged, so its ids can join elsewhere.
func TestNodeKilledMidStream(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	a, b := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g")
	e, d := dial(t, nodes[0], "e", "k"), dial(t, nodes[1], "d", "k")
	p, q := dial(t, nodes[1], "p", "solo"), dial(t, nodes[2], "q", "solo")
	waitMembers(t, "g", 2, nodes...)
	waitMembers(t, "k", 2, nodes...)
	waitMembers(t, "solo", 2, nodes...)
	_ = e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := a.conn.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(payload("a", 0, 4<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n2 to relay the start of the message", func() bool {
		return counterValue(t, nodes[1], "wsproxy_bus_received_bytes_total") > 2<<20
	})
	killed := time.Now()
	nodes[0].kill()
	if code := b.waitClosed(30 * time.Second); code != 4002 && code != statusMissed {
		t.Errorf("b (part-way) closed with %d %q, want 4002 or 4004", code, b.reason)
	}
	if code := d.waitClosed(30 * time.Second); code != statusMissed {
		t.Errorf("d closed with %d %q, want 4004", code, d.reason)
	}
	t.Logf("n1's peers closed its groups' members %v after the kill", time.Since(killed).Round(time.Millisecond))
	msgs := binMsgs("p", 5, 100)
	if err := <-sendAll(p, msgs); err != nil {
		t.Fatal(err)
	}
	q.waitCount(5, 20*time.Second)
	judge(t, q, map[string][]rcvd{"p": msgs})
	// a's id is free again: it joins on n3 with no spurious 4001.
	waitFor(t, 20*time.Second, "n1's members to be purged", func() bool {
		_, _, ok := nodes[2].bus.NodeOf("g", "a")
		return !ok
	})
	a2 := dial(t, nodes[2], "a", "g")
	b2 := dial(t, nodes[1], "b", "g")
	waitMembers(t, "g", 2, nodes[1], nodes[2])
	m2 := binMsgs("b", 3, 100)
	if err := <-sendAll(b2, m2); err != nil {
		t.Fatal(err)
	}
	a2.waitCount(3, 20*time.Second)
	judge(t, a2, map[string][]rcvd{"b": m2})
}

// TestLossVerdictShared: one node's verdict that a peer is lost is every
// node's at once. n3's own peer timeout is far off; when n1 dies, n2
// declares it lost and purges its members, and n3 follows as soon as it
// sees that: its member of the group n1 shared gets 4004 then, not minutes
// later, and a member that joins n3 afterwards is not closed by n3's own
// verdict (it can have missed nothing of n1's).
func TestLossVerdictShared(t *testing.T) {
	ns := natstest.Start(t)
	n1, n2 := startNode(t, ns, "n1", nodeOpts{}), startNode(t, ns, "n2", nodeOpts{})
	n3 := startNode(t, ns, "n3", nodeOpts{cluster: func(c *Config) { c.PeerTimeout = 10 * time.Minute }})
	a, b, c := dial(t, n1, "a", "g"), dial(t, n2, "b", "g"), dial(t, n3, "c", "g")
	waitMembers(t, "g", 3, n1, n2, n3)
	_ = a
	n1.kill()
	if code := b.waitClosed(30 * time.Second); code != statusMissed {
		t.Errorf("b closed with %d %q, want 4004", code, b.reason)
	}
	if code := c.waitClosed(30 * time.Second); code != statusMissed {
		t.Errorf("c (on the node with the long timeout) closed with %d %q, want 4004", code, c.reason)
	}
	waitFor(t, 20*time.Second, "n1's members to be purged", func() bool {
		_, _, ok := n3.bus.NodeOf("g", "a")
		return !ok
	})
	a2, b2 := dial(t, n3, "a", "g"), dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, n2, n3)
	msgs := binMsgs("b", 3, 100)
	if err := <-sendAll(b2, msgs); err != nil {
		t.Fatal(err)
	}
	a2.waitCount(3, 20*time.Second)
	judge(t, a2, map[string][]rcvd{"b": msgs})
}

// TestNodeCutOffAndHealed: n2 loses NATS while messages flow in a group
// spanning n1 and n2, then gets it back within the peer timeout. n2 is not
// ready meanwhile (new connections 503); its members of the spanning group
// get 4004; a group only on n2 goes on; n1's members get everything or
// 4004; nobody has a gap without a close; after healing n2 is ready and new
// members talk across nodes.
func TestNodeCutOffAndHealed(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	a, b := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g")
	l1, l2 := dial(t, nodes[1], "l1", "local"), dial(t, nodes[1], "l2", "local")
	waitMembers(t, "g", 2, nodes...)
	waitMembers(t, "local", 2, nodes...)
	tr, tl := flow(a, b), flow(l1)
	waitFor(t, 20*time.Second, "traffic", func() bool { return b.count() > 10 && l2.count() > 10 })
	nodes[1].fault.Cut()
	waitFor(t, 20*time.Second, "n2 not ready", func() bool { return nodes[1].fwd.Ready() != nil })
	if got := dialStatus(t, nodes[1], "z", "g"); got != 503 {
		t.Errorf("a new connection to n2 while cut off: %d, want 503", got)
	}
	if code := b.waitClosed(20 * time.Second); code != statusMissed {
		t.Errorf("b closed with %d, want 4004", code)
	}
	nodes[1].fault.Pass()
	waitFor(t, 20*time.Second, "n2 ready again", func() bool { return nodes[1].fwd.Ready() == nil })
	sent, local := tr.halt(), tl.halt()
	settle(t, sent, tr.ended(), a)
	settle(t, local, nil, l2)
	judgeEnded(t, a, sent, tr.ended(), statusMissed)
	if !judge(t, l2, local) {
		t.Error("the group only on n2 lost messages")
	}
	if !isOpen(l2) {
		t.Error("the group only on n2 was closed")
	}
	a2, b2 := dial(t, nodes[0], "a2", "g2"), dial(t, nodes[1], "b2", "g2")
	waitMembers(t, "g2", 2, nodes...)
	msgs := binMsgs("b2", 5, 100)
	if err := <-sendAll(b2, msgs); err != nil {
		t.Fatal(err)
	}
	a2.waitCount(5, 20*time.Second)
	judge(t, a2, map[string][]rcvd{"b2": msgs})
}

// TestNATSStoppedAndRestarted: NATS goes away while messages flow and comes
// back (empty: its KV buckets were in memory). Every node is not ready
// meanwhile; members of spanning groups get 4004 (or everything); a group on
// one node survives a short outage; afterwards every node is ready and new
// members talk across nodes.
func TestNATSStoppedAndRestarted(t *testing.T) {
	ns, nodes := cluster3(t, nodeOpts{})
	a, b, c := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g"), dial(t, nodes[2], "c", "g")
	l1, l2 := dial(t, nodes[2], "l1", "local"), dial(t, nodes[2], "l2", "local")
	waitMembers(t, "g", 3, nodes...)
	waitMembers(t, "local", 2, nodes...)
	tr, tl := flow(a, b), flow(l1)
	waitFor(t, 20*time.Second, "traffic", func() bool { return c.count() > 10 && l2.count() > 10 })
	ns.Stop()
	for _, nd := range nodes {
		waitFor(t, 20*time.Second, nd.name+" not ready", func() bool { return nd.fwd.Ready() != nil })
	}
	ns.Restart()
	for _, nd := range nodes {
		waitFor(t, 30*time.Second, nd.name+" ready again", func() bool { return nd.fwd.Ready() == nil })
	}
	sent, local := tr.halt(), tl.halt()
	settle(t, sent, tr.ended(), a, b, c)
	settle(t, local, nil, l2)
	for _, r := range []*client{a, b, c} {
		judgeEnded(t, r, sent, tr.ended(), statusMissed)
	}
	judge(t, l2, local, statusMissed)
	a2, c2 := dial(t, nodes[0], "a2", "g2"), dial(t, nodes[2], "c2", "g2")
	waitMembers(t, "g2", 2, nodes...)
	msgs := binMsgs("c2", 5, 100)
	if err := <-sendAll(c2, msgs); err != nil {
		t.Fatal(err)
	}
	a2.waitCount(5, 20*time.Second)
	judge(t, a2, map[string][]rcvd{"c2": msgs})
}

// TestGracefulStop: n3 stops (SIGTERM's path: drain, 1001, goodbye) while
// messages flow between the others in a group spanning all three: its
// member gets 1001; nobody elsewhere gets 4004, even after the peer
// timeout, and nothing n3's member sent is missing.
func TestGracefulStop(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	a, b, c := dial(t, nodes[0], "a", "g"), dial(t, nodes[1], "b", "g"), dial(t, nodes[2], "c", "g")
	waitMembers(t, "g", 3, nodes...)
	// c's messages first (a sender's last messages before its proxy stops
	// may still sit in its socket, never read: they were never received).
	fromC := binMsgs("c", 50, 200)
	if err := <-sendAll(c, fromC); err != nil {
		t.Fatal(err)
	}
	tr := flow(a, b)
	waitFor(t, 20*time.Second, "traffic", func() bool { return a.count() > 60 && b.count() > 60 })
	nodes[2].stop()
	if code := c.waitClosed(20 * time.Second); code != websocket.StatusGoingAway {
		t.Errorf("c closed with %d, want 1001", code)
	}
	// Past the peer timeout: had n3's leaving been taken for a loss, a and
	// b would be closed by now.
	deadline := time.Now().Add(testPeerTimeout + 2*time.Second)
	for time.Now().Before(deadline) && isOpen(a) && isOpen(b) {
		time.Sleep(50 * time.Millisecond)
	}
	sent := tr.halt()
	sent["c"] = fromC
	settle(t, sent, nil, a, b)
	for _, r := range []*client{a, b} {
		if !isOpen(r) {
			_, code := r.status()
			t.Errorf("%s closed with %d after a graceful stop elsewhere", r.id, code)
		}
		judge(t, r, sent)
	}
}

// TestRestartSameName: a node stops and a new one starts under the same
// name: a new epoch, no stale state, no duplicate members.
func TestRestartSameName(t *testing.T) {
	ns, nodes := cluster3(t, nodeOpts{})
	a := dial(t, nodes[0], "a", "g")
	b := dial(t, nodes[1], "b", "g")
	waitMembers(t, "g", 2, nodes...)
	old := nodes[1].bus.epoch.Load()
	nodes[1].stop()
	b.waitClosed(20 * time.Second)
	waitMembers(t, "g", 1, nodes[0], nodes[2])
	n2 := startNode(t, ns, "n2", nodeOpts{})
	if n2.bus.epoch.Load() == old {
		t.Fatal("same epoch after a restart")
	}
	b2 := dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, nodes[0], n2, nodes[2])
	msgs := binMsgs("a", 5, 100)
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	b2.waitCount(5, 20*time.Second)
	judge(t, b2, map[string][]rcvd{"a": msgs})
	ms := nodes[0].bus.Members("g")
	if len(ms) != 2 {
		t.Fatalf("n1 lists %d members of g, want 2: %+v", len(ms), ms)
	}
}

// TestSlowRemoteReceiverBackpressure: under backpressure, a receiver on n2
// that stops reading holds the sender on n1 back (the others get what it
// lets through, nobody is closed), and once it reads again everyone gets
// everything.
func TestSlowRemoteReceiverBackpressure(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{fwd: func(o *forward.Options) { o.SendQueueBytes = 1 << 20 }})
	a := dial(t, nodes[0], "a", "g")
	gate := make(chan struct{})
	r := dialGated(t, nodes[1], "r", "g", gate)
	f := dial(t, nodes[2], "f", "g")
	waitMembers(t, "g", 3, nodes...)
	msgs := binMsgs("a", 40, 1<<20)
	done := sendAll(a, msgs)
	f.waitCount(3, 20*time.Second)
	// Everything in flight fits in far less than 40 MiB: had the sender
	// not waited for r, it would be done by now.
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("the sender finished (%v) while a receiver read nothing", err)
	default:
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sent := map[string][]rcvd{"a": msgs}
	for _, c := range []*client{r, f} {
		c.waitCount(40, time.Minute)
		judge(t, c, sent)
	}
}

// TestSlowRemoteReceiverDisconnect: under disconnect, the same frozen
// receiver is closed with 1008 and the sender never waits for it. (f's
// queue holds all 40 MiB: a reader starved of CPU on a busy machine may
// fall a message or two behind, which with a 1 MiB queue would rightly
// close it too.)
func TestSlowRemoteReceiverDisconnect(t *testing.T) {
	ns := natstest.Start(t)
	queue := func(bytes int64) nodeOpts {
		return nodeOpts{fwd: func(o *forward.Options) {
			o.SlowConsumer = forward.Disconnect
			o.SendQueueBytes = bytes
		}}
	}
	nodes := []*node{startNode(t, ns, "n1", queue(1<<20)), startNode(t, ns, "n2", queue(1<<20)), startNode(t, ns, "n3", queue(64<<20))}
	a := dial(t, nodes[0], "a", "g")
	gate := make(chan struct{})
	dialGated(t, nodes[1], "r", "g", gate)
	defer close(gate)
	f := dial(t, nodes[2], "f", "g")
	waitMembers(t, "g", 3, nodes...)
	msgs := binMsgs("a", 40, 1<<20)
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	// r reads nothing, so it cannot see its close: n2 says how it ended.
	waitClosedOn(t, nodes[1], "g", "r", 1008)
	f.waitCount(40, time.Minute)
	judge(t, f, map[string][]rcvd{"a": msgs})
}

// TestSlowNodeCut: under backpressure, a node that grants no room for
// --write-timeout (its member frozen, its own write timeout much longer) is
// cut from the group: its members of it get 1008; the sender goes on; the
// other nodes' members get everything.
func TestSlowNodeCut(t *testing.T) {
	ns := natstest.Start(t)
	// n1 cuts a node that grants nothing for 5 s; n2's frozen member would
	// be evicted only after 5 minutes, so the cut is what closes it.
	n1 := startNode(t, ns, "n1", nodeOpts{fwd: func(o *forward.Options) {
		o.SendQueueBytes = 1 << 20
		o.WriteTimeout = 5 * time.Second
	}})
	n2 := startNode(t, ns, "n2", nodeOpts{fwd: func(o *forward.Options) {
		o.SendQueueBytes = 1 << 20
		o.WriteTimeout = 5 * time.Minute
	}})
	n3 := startNode(t, ns, "n3", nodeOpts{fwd: func(o *forward.Options) { o.SendQueueBytes = 1 << 20 }})
	a := dial(t, n1, "a", "g")
	gate := make(chan struct{})
	dialGated(t, n2, "r", "g", gate)
	defer close(gate)
	f := dial(t, n3, "f", "g")
	waitMembers(t, "g", 3, n1, n2, n3)
	msgs := binMsgs("a", 30, 1<<20)
	done := sendAll(a, msgs)
	waitClosedOn(t, n2, "g", "r", 1008)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.waitCount(30, time.Minute)
	judge(t, f, map[string][]rcvd{"a": msgs})
	if v := counterValue(t, n1, "wsproxy_bus_losses_total"); v < 1 {
		t.Errorf("n1 counted %v cuts, want at least 1", v)
	}
}

// waitClosedOn waits until n has closed member id of group with code (or
// is closing it: a member that reads nothing cannot be told, and its close
// waits for the frame in progress for up to --write-timeout).
func waitClosedOn(t *testing.T, n *node, group, id string, code int) {
	t.Helper()
	m := n.fwd.Registry().Member(group, id)
	if m == nil {
		t.Fatalf("%s is not a member on %s", id, n.name)
	}
	waitFor(t, time.Minute, fmt.Sprintf("%s to close %s with %d", n.name, id, code), func() bool {
		got, _, _ := m.CloseStatus()
		return int(got) == code
	})
}

// TestPeerLostAfterAnotherPurged: n1 dies; n3 notices first and purges n1's
// registry entries before n2 (with a longer peer timeout) notices. n2 must
// still close its members of the groups n1 shared (4004), though n1's
// members are gone from its index by then.
func TestPeerLostAfterAnotherPurged(t *testing.T) {
	ns := natstest.Start(t)
	n1 := startNode(t, ns, "n1", nodeOpts{})
	n2 := startNode(t, ns, "n2", nodeOpts{cluster: func(c *Config) { c.PeerTimeout = 2 * testPeerTimeout }})
	n3 := startNode(t, ns, "n3", nodeOpts{})
	e, d := dial(t, n1, "e", "k"), dial(t, n2, "d", "k")
	f := dial(t, n3, "f", "k2")
	_ = dial(t, n1, "e2", "k2")
	waitMembers(t, "k", 2, n1, n2, n3)
	waitMembers(t, "k2", 2, n1, n2, n3)
	_, _ = e, f
	n1.kill()
	waitFor(t, 30*time.Second, "n3 to purge n1's members", func() bool {
		_, _, ok := n2.bus.NodeOf("k", "e")
		return !ok
	})
	if code := d.waitClosed(30 * time.Second); code != statusMissed {
		t.Errorf("d closed with %d %q, want 4004", code, d.reason)
	}
}

// TestNATSServerLost: NATS runs as a cluster of three servers, the buckets
// with three replicas, each node on its own server. The server leading the
// member registry stops: the node on it moves to another server; meanwhile
// it is not ready and its members of groups that span nodes get 4004, as
// with any loss of the bus; the others' members get everything its member
// sent or a gap-free prefix and 4004; a group on the two other nodes only
// is untouched. The registry survives (another replica leads it): once the
// node is ready again, new members join on every node and talk.
func TestNATSServerLost(t *testing.T) {
	ss := natstest.StartCluster(t, 3)
	nodes := []*node{startNode(t, ss[0], "n1", nodeOpts{}), startNode(t, ss[1], "n2", nodeOpts{}), startNode(t, ss[2], "n3", nodeOpts{})}
	natstest.AwaitStream(t, ss, "KV_test_members")
	natstest.AwaitStream(t, ss, "KV_test_order")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := nodes[0].bus.js.Stream(ctx, "KV_test_members")
	if err != nil {
		t.Fatal(err)
	}
	if r := stream.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("the registry has %d replicas on a three-server NATS, want 3", r)
	}
	if r := nodes[1].bus.orderKVStream(t); r != 3 {
		t.Fatalf("the order bucket has %d replicas on a three-server NATS, want 3", r)
	}
	k := -1
	for i, s := range ss {
		if cl := stream.CachedInfo().Cluster; cl != nil && cl.Leader == s.Server().Name() {
			k = i
		}
	}
	if k < 0 {
		t.Fatal("no server leads the registry")
	}
	hit, o1, o2 := nodes[k], nodes[(k+1)%3], nodes[(k+2)%3]
	a, b, c := dial(t, hit, "a", "g"), dial(t, o1, "b", "g"), dial(t, o2, "c", "g")
	p, q := dial(t, o1, "p", "solo"), dial(t, o2, "q", "solo")
	waitMembers(t, "g", 3, nodes...)
	waitMembers(t, "solo", 2, nodes...)
	tr, ts := flow(a), flow(p)
	waitFor(t, 20*time.Second, "traffic", func() bool { return b.count() > 10 && c.count() > 10 && q.count() > 10 })
	ss[k].Stop()
	if code := a.waitClosed(20 * time.Second); code != statusMissed {
		t.Errorf("a (on the node whose NATS server stopped) closed with %d %q, want 4004", code, a.reason)
	}
	waitFor(t, 30*time.Second, hit.name+" ready again", func() bool { return hit.fwd.Ready() == nil })
	sent, solo := tr.halt(), ts.halt()
	for _, r := range []*client{b, c} {
		settle(t, sent, tr.ended(), r)
		judgeEnded(t, r, sent, tr.ended(), statusMissed)
	}
	settle(t, solo, nil, q)
	if !judge(t, q, solo) || !isOpen(q) {
		t.Error("the group on the two other nodes only was harmed")
	}
	xs := []*client{dial(t, hit, "x1", "h"), dial(t, o1, "x2", "h"), dial(t, o2, "x3", "h")}
	waitMembers(t, "h", 3, nodes...)
	msgs := binMsgs("x1", 5, 100)
	if err := <-sendAll(xs[0], msgs); err != nil {
		t.Fatal(err)
	}
	for _, x := range xs[1:] {
		x.waitCount(5, 20*time.Second)
		judge(t, x, map[string][]rcvd{"x1": msgs})
	}
}

// TestTwoNATSServers: a NATS cluster of two cannot place three replicas:
// the buckets keep one, and the nodes work.
func TestTwoNATSServers(t *testing.T) {
	ss := natstest.StartCluster(t, 2)
	n1, n2 := startNode(t, ss[0], "n1", nodeOpts{}), startNode(t, ss[1], "n2", nodeOpts{})
	if r := n1.bus.orderKVStream(t); r != 1 {
		t.Errorf("the order bucket has %d replicas on a two-server NATS, want 1", r)
	}
	a, b := dial(t, n1, "a", "g"), dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, n1, n2)
	msgs := binMsgs("a", 3, 100)
	if err := <-sendAll(a, msgs); err != nil {
		t.Fatal(err)
	}
	b.waitCount(3, 20*time.Second)
	judge(t, b, map[string][]rcvd{"a": msgs})
}
