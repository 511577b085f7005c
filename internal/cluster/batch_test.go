package cluster

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsproxy/wsproxy/internal/natstest"
)

// TestBatchOrder: a group's chunks reach NATS in their sequence order
// whichever way they go. The flusher is held back, so a small chunk is
// still waiting in the group's batch when a larger one, published alone,
// comes: the batch must go first.
func TestBatchOrder(t *testing.T) {
	hold := make(chan struct{})
	testBeforeFlush = func() { <-hold }
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	t.Cleanup(func() { release(); testBeforeFlush = nil })
	ns := natstest.Start(t)
	n1 := startNode(t, ns, "n1", nodeOpts{})
	t.Cleanup(n1.stop) // before the hook is cleared: the flusher must not wait then
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("test.g.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	bus := n1.bus
	og := bus.outGroup("g")
	whole := func() *header {
		return &header{kind: kindData, flags: flagFirst | flagLast, epoch: bus.epoch.Load(), from: "a"}
	}
	bus.emit(og, whole(), []byte("small"), nil)
	bus.emit(og, whole(), make([]byte, 20<<10), nil) // alone: at least a quarter of a batch
	bus.emit(og, whole(), []byte("small again"), nil)
	bus.emit(og, &header{kind: kindSync, epoch: bus.epoch.Load()}, nil, nil)
	release()
	var seqs []uint64
	for len(seqs) < 4 {
		msg, err := sub.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("after chunks %v: %v", seqs, err)
		}
		for _, c := range chunksOf(t, msg.Data) {
			seqs = append(seqs, c.seq)
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("chunks reached NATS in the order %v, want 1 2 3 4", seqs)
		}
	}
}

// chunksOf parses a bus message: one chunk, or a batch of them.
func chunksOf(t *testing.T, data []byte) []header {
	t.Helper()
	var out []header
	one := func(b []byte) {
		var h header
		if _, err := parseHeader(b, &h); err != nil {
			t.Fatalf("bad chunk: %v", err)
		}
		out = append(out, h)
	}
	if len(data) == 0 || data[0] != batchVersion {
		one(data)
		return out
	}
	for data = data[1:]; len(data) > 0; {
		size := int(binary.BigEndian.Uint32(data))
		one(data[4 : 4+size])
		data = data[4+size:]
	}
	return out
}
