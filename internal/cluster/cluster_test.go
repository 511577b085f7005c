package cluster

import (
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
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
