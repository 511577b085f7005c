package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/natstest"
)

func idleAfter(d time.Duration) nodeOpts {
	return nodeOpts{cluster: func(c *Config) { c.Idle = d }}
}

// TestIdleOriginStartsOver: the sending node forgets an idle group's state;
// the receiving node keeps its own, so the next message arrives numbered 1
// where 4 was expected. That is a fresh start, not a gap: the member gets
// everything in order and stays open, a message larger than the credit
// window included.
func TestIdleOriginStartsOver(t *testing.T) {
	ns := natstest.Start(t)
	n1, n2 := startNode(t, ns, "n1", idleAfter(300*time.Millisecond)), startNode(t, ns, "n2", idleAfter(time.Hour))
	a, b := dial(t, n1, "a", "g"), dial(t, n2, "b", "g")
	waitMembers(t, "g", 2, n1, n2)
	first := binMsgs("a", 3, 100)
	if err := <-sendAll(a, first); err != nil {
		t.Fatal(err)
	}
	b.waitCount(3, 20*time.Second)
	waitFor(t, 20*time.Second, "n1 to forget g", func() bool { out, _ := n1.bus.states(); return out == 0 })
	if _, in := n2.bus.states(); in != 1 {
		t.Fatalf("n2 keeps %d receiving states, want 1 (its own idle time is an hour)", in)
	}
	second := []rcvd{{websocket.MessageBinary, payload("a", 3, 100)}, {websocket.MessageText, textPayload("a", 4, 200)},
		{websocket.MessageBinary, payload("a", 5, 3<<20)}}
	if err := <-sendAll(a, second); err != nil {
		t.Fatal(err)
	}
	b.waitCount(6, 20*time.Second)
	judge(t, b, map[string][]rcvd{"a": append(first, second...)})
}

// TestIdleStateBounded: what a node keeps for the bus follows the groups in
// use, not every group ever used. Ten groups spanning two nodes, used once:
// the sender's node forgets them all once idle; the receiving node keeps
// its state of each while it has a member there (only that state can show
// a loss), and forgets it once its member has left.
func TestIdleStateBounded(t *testing.T) {
	const idle = 300 * time.Millisecond
	ns := natstest.Start(t)
	n1, n2 := startNode(t, ns, "n1", idleAfter(idle)), startNode(t, ns, "n2", idleAfter(idle))
	var ys []*client
	for i := range 10 {
		g := fmt.Sprintf("g%d", i)
		x, y := dial(t, n1, "x", g), dial(t, n2, "y", g)
		waitMembers(t, g, 2, n1, n2)
		msgs := binMsgs("x", 1, 100)
		if err := <-sendAll(x, msgs); err != nil {
			t.Fatal(err)
		}
		y.waitCount(1, 20*time.Second)
		judge(t, y, map[string][]rcvd{"x": msgs})
		ys = append(ys, y)
	}
	waitFor(t, 20*time.Second, "n1 to forget every group it sent to", func() bool { out, _ := n1.bus.states(); return out == 0 })
	time.Sleep(5 * idle) // long enough for n2 to forget, were it to
	if _, in := n2.bus.states(); in != 10 {
		t.Fatalf("n2 keeps %d receiving states while its members are there, want 10", in)
	}
	for _, y := range ys {
		y.conn.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, 20*time.Second, "both nodes to forget every group", func() bool {
		out1, in1 := n1.bus.states()
		out2, in2 := n2.bus.states()
		return out1+in1+out2+in2 == 0
	})
}
