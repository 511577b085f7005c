package cluster

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/internal/forward"
)

// outGroup is what this node sends to one group on the bus.
type outGroup struct {
	// Static.
	name, g64, subject string

	// sem is the group's place on the bus: held by one writer at a time,
	// from Open to End or Abort, so that one message's chunks are never
	// interleaved with another's (receivers relay one message at a time
	// per origin and group).
	sem chan struct{}

	// pub orders the group's chunks on the bus: a chunk is numbered and
	// published (or batched) under it, by a writer, a sync or the flusher.
	pub    sync.Mutex
	batch  []byte // small chunks not yet published (a batch message), nil if none
	nbatch int    // chunks in batch

	refs    int          // writers and syncs using it (guarded by Node.mu)
	batched atomic.Bool  // batch is not empty
	last    atomic.Int64 // when the last chunk was numbered (UnixNano)

	// Guarded by mu.
	mu      sync.Mutex
	seq     uint64 // chunks sent so far
	off     int64  // payload bytes sent so far
	credits map[uint64]*credit
	cut     map[uint64]bool // nodes cut from this group (until they leave it)
	wake    chan struct{}   // closed when a credit arrives
}

// credit is how far one node has consumed this node's messages to a group.
type credit struct {
	consumed int64     // an offset in the origin's bytes to the group
	blocked  time.Time // since when this node holds a sender back (zero: it does not)
}

// outGroup returns the group's state, held until releaseOut.
func (n *Node) outGroup(name string) *outGroup {
	n.mu.Lock()
	defer n.mu.Unlock()
	og := n.out[name]
	if og == nil {
		g64 := encodeName(name)
		og = &outGroup{
			name: name, g64: g64, subject: n.dataSub + g64,
			sem:     make(chan struct{}, 1),
			credits: map[uint64]*credit{},
			cut:     map[uint64]bool{},
			wake:    make(chan struct{}),
			// Offsets start past every forgotten state's: a late
			// credit for an earlier state grants nothing here.
			off: n.offFloor,
		}
		n.out[name] = og
	}
	og.refs++
	return og
}

func (n *Node) releaseOut(og *outGroup) {
	n.mu.Lock()
	og.refs--
	n.mu.Unlock()
}

// forgetIdleOut drops the state of every group this node has not sent to
// for --idle (nobody using it, nothing waiting in its batch), once a round
// trip to NATS has followed its last chunk: everything it sent is in NATS,
// so no sync will ever be needed for it. The next message to the group
// starts its numbering over at 1, which receivers take as a fresh start
// (in.go). Without this, every group ever sent to would be kept forever.
func (n *Node) forgetIdleOut(now time.Time) {
	alive := n.alive.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, og := range n.out {
		last := og.last.Load()
		if og.refs > 0 || og.batched.Load() || last >= alive || now.Sub(time.Unix(0, last)) < n.cfg.idle() {
			continue
		}
		og.mu.Lock()
		n.offFloor = max(n.offFloor, og.off)
		og.mu.Unlock()
		delete(n.out, name)
	}
}

func (og *outGroup) sent() uint64 {
	og.mu.Lock()
	defer og.mu.Unlock()
	return og.seq
}

// writer is one message on its way to a group's other nodes
// (forward.BusWriter).
type writer struct {
	n       *Node
	og      *outGroup
	m       forward.OutMessage
	held    bool   // holds og.sem
	lease   *lease // the group's stream order, for a stream (order.go)
	started bool   // the first chunk is out
	done    bool
}

// Open starts a message to group m.Group on other nodes (forward.Bus). It
// waits (parked) for the group's place on the bus; if m.Stop closes first,
// the writer fails every Write.
func (n *Node) Open(m forward.OutMessage) forward.BusWriter {
	w := &writer{n: n, og: n.outGroup(m.Group), m: m}
	if m.Stream {
		w.lease = n.takeLease(w.og, m)
	}
	select {
	case w.og.sem <- struct{}{}:
		w.held = true
	default:
		m.Park()
		select {
		case w.og.sem <- struct{}{}:
			w.held = true
		case <-m.Stop:
		}
		m.Unpark()
	}
	return w
}

func (w *writer) Write(p []byte) error {
	if !w.held {
		return forward.ErrBusStopped
	}
	for len(p) > 0 {
		k := min(len(p), w.n.chunk)
		if err := w.send(kindData, p[:k], false); err != nil {
			return err
		}
		p = p[k:]
	}
	return nil
}

func (w *writer) End() {
	if w.done {
		return
	}
	if w.held {
		_ = w.send(kindData, nil, true)
	}
	w.finish()
}

// Send sends p as the whole message (nothing written before) and ends it:
// a small message is one bus message.
func (w *writer) Send(p []byte) error {
	if !w.held {
		return forward.ErrBusStopped
	}
	for len(p) > w.n.chunk {
		if err := w.send(kindData, p[:w.n.chunk], false); err != nil {
			return err
		}
		p = p[w.n.chunk:]
	}
	if err := w.send(kindData, p, true); err != nil {
		return err
	}
	w.finish()
	return nil
}

func (w *writer) Abort() {
	if w.done {
		return
	}
	if w.held && w.started {
		_ = w.publish(kindAbort, nil, false)
	}
	w.finish()
}

// finish ends the writer: it gives back the group's place on the bus and
// its hold on the group's state.
func (w *writer) finish() {
	w.done = true
	if w.held {
		w.held = false
		<-w.og.sem
	}
	if w.lease != nil && !w.started {
		w.n.releaseLease(w.lease) // never handed over to holdLease
	}
	w.n.releaseOut(w.og)
}

// send waits for room for p (as the policy says) and publishes it.
func (w *writer) send(kind byte, p []byte, last bool) error {
	if len(p) > 0 {
		if err := w.n.waitRoom(w.og, int64(len(p)), w.m); err != nil {
			return err
		}
	}
	return w.publish(kind, p, last)
}

// publish sends one chunk. A failed publish (the bus is gone) is not an
// error to the sender: the chunk's sequence number is spent, so the other
// nodes see the gap (the sync sent once the bus is back shows it if
// nothing else does).
func (w *writer) publish(kind byte, p []byte, last bool) error {
	og := w.og
	h := header{kind: kind, epoch: w.n.epoch.Load()}
	if kind == kindData {
		if !w.started {
			h.flags |= flagFirst
			h.from, h.to = w.m.From, w.m.To
			if w.lease != nil {
				h.flags |= flagOrdered
			}
		}
		if last {
			h.flags |= flagLast
		}
		if w.m.Text {
			h.flags |= flagText
		}
	}
	var numbered func(uint64)
	if h.flags&flagOrdered != 0 {
		numbered = func(seq uint64) { w.n.holdLease(og, w.lease, seq) }
	}
	w.started = true
	w.n.emit(og, &h, p, numbered)
	return nil
}

// Batching. Small chunks (most messages are one) cost NATS, and every node
// receiving them, about as much per bus message as large ones: a group's
// small chunks are gathered into one bus message, a batch, published by
// the node's flusher goroutine as soon as it runs, or at once when the
// batch is full. Nothing waits for a timer: an idle node publishes each
// chunk almost at once, a busy one gathers more per bus message the busier
// it is. Sequence numbers are given in the order chunks enter the batch,
// under the group's pub lock, so the group's chunks reach NATS in order
// whichever path they take.
const (
	// batchBytes is the most a batch holds, unless a chunk (which fits
	// NATS's max_payload) is smaller: a quarter of it or more is published
	// alone.
	batchBytes = 64 << 10
	// batchedMax bounds the bytes waiting in every group's batch together
	// (a starved flusher, many groups): past it, a writer publishes its
	// group's batch itself.
	batchedMax = 4 << 20
)

// emit numbers the chunk (h, p) and puts it on the bus. numbered, if set,
// learns its sequence number before anyone else can.
func (n *Node) emit(og *outGroup, h *header, p []byte, numbered func(seq uint64)) {
	og.pub.Lock()
	defer og.pub.Unlock()
	og.mu.Lock()
	og.seq++
	h.seq, h.off = og.seq, og.off
	og.off += int64(len(p))
	og.mu.Unlock()
	defer og.last.Store(time.Now().UnixNano()) // after its publish, if it is not batched
	if numbered != nil {
		numbered(h.seq)
	}
	if testDropChunk != nil && testDropChunk(og.name, h.seq) {
		return // lost on the way, as far as anyone can tell
	}
	size := headerLen + len(h.from) + len(h.to) + len(p)
	limit := min(batchBytes, n.chunk)
	// A sync goes alone, at once: it must not wait in a batch that is
	// dropped for want of a connection (flushLocked).
	alone := size >= limit/4 || h.kind == kindSync
	if alone || len(og.batch)+4+size > limit {
		n.flushLocked(og) // what came before goes first
	}
	if alone && h.kind != kindSync && !n.connected.Load() {
		n.met.publishFailed() // see flushLocked
		return
	}
	if alone {
		b := appendHeader(n.getBuf(), h)
		b = append(b, p...)
		n.publishBus(og, b, 1)
		n.putBuf(b)
		return
	}
	if len(og.batch) == 0 {
		og.batch = append(n.getBuf(), batchVersion)
		og.batched.Store(true)
		n.markDirty(og)
	}
	og.batch = binary.BigEndian.AppendUint32(og.batch, uint32(size))
	og.batch = appendHeader(og.batch, h)
	og.batch = append(og.batch, p...)
	og.nbatch++
	if n.batched.Add(int64(4+size)) > batchedMax {
		n.flushLocked(og)
	}
}

// flushLocked publishes the group's batch, if it has one (og.pub held).
// While the node is not connected (the bus lost, or back but not yet
// resynced) data is dropped, its sequence numbers spent: the syncs sent on
// the way back must reach the others before any later data, so that a
// receiver that never had this node's chunks of a group learns that some
// were lost (in.go) instead of taking the next one as a first sight.
func (n *Node) flushLocked(og *outGroup) {
	if len(og.batch) == 0 {
		return
	}
	if !n.connected.Load() {
		n.met.publishFailed()
	} else {
		n.publishBus(og, og.batch, og.nbatch)
	}
	n.batched.Add(-int64(len(og.batch) - 1))
	n.putBuf(og.batch)
	og.batch, og.nbatch = nil, 0
	og.last.Store(time.Now().UnixNano())
	og.batched.Store(false)
}

// publishBus hands one bus message to NATS. A failed publish (the bus is
// gone) is not an error to the sender: the chunks' sequence numbers are
// spent, so the other nodes see the gap (the sync sent once the bus is back
// shows it if nothing else does).
func (n *Node) publishBus(og *outGroup, data []byte, chunks int) {
	if err := n.nc.Publish(og.subject, data); err != nil {
		n.met.publishFailed()
		return
	}
	n.met.published(chunks, len(data))
}

// markDirty queues og for the flusher.
func (n *Node) markDirty(og *outGroup) {
	n.flushMu.Lock()
	n.dirty = append(n.dirty, og)
	n.flushMu.Unlock()
	select {
	case n.flushWake <- struct{}{}:
	default:
	}
}

// flusher publishes the groups' batches whenever there are some, until the
// node closes.
func (n *Node) flusher() {
	defer n.wg.Done()
	for {
		select {
		case <-n.flushWake:
		case <-n.closed:
			return
		}
		if testBeforeFlush != nil {
			testBeforeFlush()
		}
		n.flushAll()
	}
}

// flushAll publishes every batch waiting.
func (n *Node) flushAll() {
	n.flushMu.Lock()
	dirty := n.dirty
	n.dirty, n.spare = n.spare, nil // never one array in two hands
	n.flushMu.Unlock()
	for i, og := range dirty {
		og.pub.Lock()
		n.flushLocked(og)
		og.pub.Unlock()
		dirty[i] = nil
	}
	n.flushMu.Lock()
	if n.spare == nil {
		n.spare = dirty[:0]
	}
	n.flushMu.Unlock()
}

// Buffers for bus messages are shared by every group (NATS copies what is
// published): a group holds one only while it has a batch waiting.
var busBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (n *Node) getBuf() []byte { return (*busBufs.Get().(*[]byte))[:0] }

func (n *Node) putBuf(b []byte) {
	if cap(b) <= 2*(n.chunk+maxHeaderBytes) {
		b = b[:0]
		busBufs.Put(&b)
	}
}

// Test hooks, set only by tests before any node starts.
var (
	// testDropChunk, if it returns true, drops the chunk instead of
	// publishing it.
	testDropChunk func(group string, seq uint64) bool
	// testSlowDispatch runs before each chunk is dispatched.
	testSlowDispatch func(n *Node)
	// testNoHeartbeat, if it returns true, keeps n from sending heartbeats.
	testNoHeartbeat func(n *Node) bool
	// testBeforeFlush runs in the flusher before it publishes the batches.
	testBeforeFlush func()
)

// waitRoom waits until sending size more bytes to og keeps every other node
// with members in the group within its window. Under either policy: a node
// grants room as fast as it hands the messages to its members' queues, and
// under disconnect it never waits for a slow member (it closes it), so the
// sender then waits only for the other node itself, as a local sender waits
// for its own proxy. A node that has granted nothing for --write-timeout while this
// one waits is cut from the group: its members of it are closed with 1008.
func (n *Node) waitRoom(og *outGroup, size int64, m forward.OutMessage) error {
	window := int64(n.cfg.WindowBytes)
	parked := false
	defer func() {
		if parked {
			m.Unpark()
		}
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		me := n.epoch.Load()
		n.mu.Lock()
		nodes := n.remoteNodesLocked(og.name)
		og.mu.Lock()
		// The nodes more than a window behind hold the sender back; one
		// that has done so for --write-timeout without granting anything
		// is cut.
		var stuckNode uint64
		var stuck time.Duration
		blocked := false
		for e := range nodes {
			if e == me || og.cut[e] {
				continue
			}
			c := og.credits[e]
			if c == nil {
				// A node not heard from yet gets a window from now.
				c = &credit{consumed: og.off}
				og.credits[e] = c
			}
			if og.off+size-c.consumed <= window {
				c.blocked = time.Time{}
				continue
			}
			blocked = true
			if c.blocked.IsZero() {
				c.blocked = now
			}
			if d := now.Sub(c.blocked); d >= stuck {
				stuckNode, stuck = e, d
			}
		}
		// Nodes that left the group, or were cut and have left it since,
		// are forgotten.
		for e := range og.credits {
			if nodes[e] == 0 {
				delete(og.credits, e)
			}
		}
		for e := range og.cut {
			if nodes[e] == 0 {
				delete(og.cut, e)
			}
		}
		n.mu.Unlock()
		if !blocked {
			og.mu.Unlock()
			return nil
		}
		if stuck >= n.cfg.WriteTimeout {
			og.cut[stuckNode] = true
			delete(og.credits, stuckNode)
			og.mu.Unlock()
			n.cutNode(og, stuckNode)
			continue
		}
		wake := og.wake
		og.mu.Unlock()
		if !parked {
			m.Park()
			parked = true
		}
		if timer == nil {
			timer = time.NewTimer(n.cfg.WriteTimeout - stuck)
		} else {
			timer.Reset(n.cfg.WriteTimeout - stuck)
		}
		start := time.Now()
		select {
		case <-wake:
		case <-timer.C:
		case <-m.Stop:
			return forward.ErrBusStopped
		case <-n.closed:
			return forward.ErrBusStopped
		}
		n.met.creditWait(time.Since(start))
	}
}

// cutNode tells node e that it fell behind og for too long: it closes its
// members of the group (1008) and this node stops waiting for it.
func (n *Node) cutNode(og *outGroup, e uint64) {
	n.met.loss("cut")
	n.log.Warn().Str("group", og.name).Str("peer", epochHex(e)).Msg("cluster: a node granted no room for --write-timeout: cut from the group")
	_ = n.nc.Publish(n.nodeSubject(e), appendCut(nil, n.epoch.Load(), og.g64))
}

// onCredit records node e's progress through this node's messages to a
// group.
func (n *Node) onCredit(e uint64, consumed int64, g64 string) {
	name, ok := decodeName(g64)
	if !ok {
		return
	}
	n.mu.Lock()
	og := n.out[name]
	n.mu.Unlock()
	if og == nil {
		return
	}
	og.mu.Lock()
	if og.cut[e] {
		og.mu.Unlock()
		return
	}
	c := og.credits[e]
	if c == nil {
		c = &credit{}
		og.credits[e] = c
	}
	if consumed > c.consumed {
		c.consumed = consumed
		c.blocked = time.Time{} // it grants: its wait starts over
		close(og.wake)
		og.wake = make(chan struct{})
	}
	og.mu.Unlock()
}

// sendSyncs runs once the bus is back: to every group this node sent to,
// a sync carrying the next sequence number. Whatever did not get through
// while the link was failing (publishes that failed, and those nats.go had
// buffered when the link died) then shows as a gap at every receiving node,
// even if this node sends nothing more to the group.
func (n *Node) sendSyncs() {
	n.mu.Lock()
	outs := make([]*outGroup, 0, len(n.out))
	for _, og := range n.out {
		og.refs++
		outs = append(outs, og)
	}
	n.mu.Unlock()
	defer func() {
		for _, og := range outs {
			n.releaseOut(og)
		}
	}()
	for _, og := range outs {
		// Without the group's place on the bus: a sync in the middle of
		// a message is skipped by receivers that missed nothing. If it
		// fails, the bus is gone again: the next reconnect syncs.
		if og.sent() == 0 {
			continue
		}
		n.emit(og, &header{kind: kindSync, epoch: n.epoch.Load()}, nil, nil)
	}
	n.flushAll()
}
