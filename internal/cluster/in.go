package cluster

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
)

type natsMsg = nats.Msg

// inKey names the chunks of one origin node to one group.
type inKey struct {
	epoch uint64
	g64   string
}

// inGroup is this node's side of one (origin, group): the chunks received,
// in order, and the worker relaying them to the group's members here.
//
// The dispatcher (onData) checks sequence numbers and queues chunks; it
// never blocks. The worker takes the chunks of one message at a time and
// relays them through forward.Server.DeliverRemote, which may wait for
// receivers; what it consumed it reports to the origin as credit. A reset
// (a gap, an overflow, a cut, the origin lost) drops what is queued and
// abandons the message being relayed (receivers part-way through it get
// 4002); the caller then closes the group's members.
type inGroup struct {
	// Static.
	n     *Node
	key   inKey
	group string
	g64   string

	mu       sync.Mutex
	gone     bool      // forgotten (forgetIdleIn): a chunk must go to a new state
	last     time.Time // when the last chunk came
	expect   uint64    // next sequence number; 0: none seen yet
	open     bool      // the last chunk queued left a message unfinished
	q        []chunk
	qBytes   int64
	running  bool          // a worker runs
	wake     chan struct{} // signalled (cap 1) when a chunk is queued
	stop     chan struct{} // closed by reset: the message being relayed is abandoned
	idle     chan struct{} // closed when the worker exits; nil while none runs
	consumed int64         // how far the worker has consumed (an offset in the origin's bytes)
	reported int64         // the last consumed offset reported
	flush    *time.Timer   // a report is due (nil: none)
}

type chunk struct {
	h       header
	payload []byte
}

var (
	errReset = errors.New("bus: messages were lost; the message is abandoned")
	errAbort = errors.New("bus: the origin abandoned the message")
)

func (n *Node) inGroup(k inKey) *inGroup {
	n.mu.Lock()
	defer n.mu.Unlock()
	ig := n.in[k]
	if ig == nil {
		name, ok := decodeName(k.g64)
		if !ok {
			return nil
		}
		ig = &inGroup{n: n, key: k, group: name, g64: k.g64, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		n.in[k] = ig
		n.notePeerLocked(k.epoch, "")
	}
	return ig
}

// takeInLocked removes and returns the states whose key match.
func (n *Node) takeInLocked(match func(inKey) bool) []*inGroup {
	var out []*inGroup
	for k, ig := range n.in {
		if match(k) {
			out = append(out, ig)
			delete(n.in, k)
		}
	}
	return out
}

// onData dispatches one chunk from the bus. It runs on the data
// subscription's goroutine and never blocks on anything but short locks.
func (n *Node) onData(msg *natsMsg) {
	if testSlowDispatch != nil {
		testSlowDispatch(n)
	}
	n.met.received(len(msg.Data))
	g64 := msg.Subject[len(n.dataSub):]
	data := msg.Data
	if len(data) == 0 || data[0] != batchVersion {
		n.onChunk(g64, data)
		return
	}
	for data = data[1:]; len(data) > 0; {
		if len(data) < 4 || int(binary.BigEndian.Uint32(data)) > len(data)-4 {
			n.met.loss("malformed")
			return // what is lost shows as a gap
		}
		size := int(binary.BigEndian.Uint32(data))
		n.onChunk(g64, data[4:4+size])
		data = data[4+size:]
	}
}

// onChunk dispatches one chunk to group g64.
func (n *Node) onChunk(g64 string, data []byte) {
	var h header
	payload, err := parseHeader(data, &h)
	if err != nil {
		n.met.loss("malformed")
		return
	}
	n.met.chunk()
	if h.epoch == n.epoch.Load() {
		return
	}
	n.mu.Lock()
	_, dead := n.dead[h.epoch]
	n.mu.Unlock()
	if dead {
		return
	}
	var ig *inGroup
	var why string
	for {
		if ig = n.inGroup(inKey{h.epoch, g64}); ig == nil {
			return
		}
		var gone bool
		if why, gone = ig.add(&h, payload); !gone {
			break
		}
	}
	if why != "" {
		code, reason := statusMissed, reasonMissed
		if why == "overflow" {
			code, reason = websocket.StatusPolicyViolation, "slow consumer"
		}
		n.closeGroupLocal(ig.group, time.Time{}, code, reason, why)
	}
}

// forgetIdleIn drops the state of every (origin, group) whose group has no
// member here, that this node has received nothing from for --idle and
// has nothing of in flight. With nobody here, nothing is owed to anyone;
// a chunk after that starts a new state, which takes whatever sequence
// number comes first, as the very first chunk from an origin does. States
// of groups with members here are kept while they have members: only they
// can show a loss (a chunk lost would otherwise go unseen, if the origin
// sent nothing after it but a sync).
func (n *Node) forgetIdleIn(now time.Time) {
	here := map[string]bool{}
	for _, g := range n.local.LocalGroups() {
		here[g] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, ig := range n.in {
		if here[ig.group] {
			continue
		}
		ig.mu.Lock()
		if !ig.running && !ig.open && len(ig.q) == 0 && ig.flush == nil && now.Sub(ig.last) >= n.cfg.idle() {
			ig.gone = true
			delete(n.in, k)
		}
		ig.mu.Unlock()
	}
}

// add queues a chunk. It returns why the group's members here must be
// closed, if they must: "gap" (a chunk was lost) or "overflow" (this node
// fell more than the allowance behind; under backpressure the origin keeps
// within the window, so only a node that cannot keep up gets there); or
// gone if this state was forgotten meanwhile (nothing done: the caller
// tries again with a new one).
func (ig *inGroup) add(h *header, payload []byte) (why string, gone bool) {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	if ig.gone {
		return "", true
	}
	ig.last = time.Now()
	// Sequence number 1 is a fresh start: the origin forgot its state for
	// the group after it sent nothing for a while (forgetIdleOut), and
	// everything it sent before is in NATS. Unless a message is open here:
	// then the message's end was lost.
	fresh := h.seq == 1 && !ig.open
	if ig.expect != 0 && h.seq != ig.expect && !fresh {
		why = "gap"
		ig.resetLocked()
	}
	seen := ig.expect != 0
	ig.expect = h.seq + 1
	if h.kind == kindSync {
		if !seen && h.seq > 1 && ig.n.local.HasGroup(ig.group) {
			// The origin sent this group chunks (it syncs only groups it
			// sent to) that never came here, while members were here:
			// they may have been owed them.
			return "gap", false
		}
		return why, false
	}
	first := h.kind == kindData && h.flags&flagFirst != 0
	if !ig.open {
		if !first || !ig.n.local.HasGroup(ig.group) {
			// Nobody here to deliver to, or the rest of a message that
			// started before this node was listening (or was reset).
			return why, false
		}
	} else if first {
		// A new message while one is open: chunks went missing without
		// a gap in numbering (cannot happen with a well-behaved origin).
		ig.resetLocked()
		return "gap", false
	}
	if ig.qBytes+int64(len(payload)) > ig.n.allowance() {
		ig.resetLocked()
		return "overflow", false
	}
	ig.open = !(h.kind == kindAbort || h.flags&flagLast != 0)
	ig.q = append(ig.q, chunk{*h, payload})
	ig.qBytes += int64(len(payload))
	if !ig.running {
		ig.running = true
		ig.idle = make(chan struct{})
		ig.n.wg.Add(1)
		go ig.work(ig.stop)
	} else {
		select {
		case ig.wake <- struct{}{}:
		default:
		}
	}
	return why, false
}

// allowance is how far a receiving node may fall behind an origin in one
// group before it closes its members: the window, plus what the origin may
// send before it hears of this node.
func (n *Node) allowance() int64 { return 4 * int64(n.cfg.WindowBytes) }

// reset drops what is queued and abandons the message being relayed.
func (ig *inGroup) reset() {
	ig.mu.Lock()
	ig.resetLocked()
	ig.mu.Unlock()
}

func (ig *inGroup) resetLocked() {
	ig.q, ig.qBytes, ig.open = nil, 0, false
	close(ig.stop)
	ig.stop = make(chan struct{})
}

// received is the last sequence number received.
func (ig *inGroup) received() uint64 {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	if ig.expect == 0 {
		return 0
	}
	return ig.expect - 1
}

// wait returns once no worker runs.
func (ig *inGroup) wait() {
	ig.mu.Lock()
	idle := ig.idle
	ig.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

// What take found.
const (
	taken    = iota // a chunk
	wasReset        // stop closed: the message being relayed is abandoned
	idle            // nothing queued (without wait): the worker has ended
)

// take returns the next queued chunk, waiting for one only if wait is set
// (in the middle of a message). Without wait, an empty queue ends the
// worker: running is cleared under the same lock, so that the next add
// starts a new one.
func (ig *inGroup) take(stop chan struct{}, wait bool) (chunk, int) {
	for {
		ig.mu.Lock()
		if ig.stop != stop {
			ig.mu.Unlock()
			return chunk{}, wasReset
		}
		if len(ig.q) > 0 {
			c := ig.q[0]
			ig.q[0] = chunk{}
			ig.q = ig.q[1:]
			ig.qBytes -= int64(len(c.payload))
			ig.mu.Unlock()
			return c, taken
		}
		if !wait {
			ig.running = false
			close(ig.idle)
			ig.mu.Unlock()
			return chunk{}, idle
		}
		ig.mu.Unlock()
		ig.report(0, true) // about to wait: whatever was consumed is credit soon
		select {
		case <-ig.wake:
		case <-stop:
		}
	}
}

// work relays messages while chunks are queued. stop is the reset channel
// current when it started; after a reset it carries on with the new one.
func (ig *inGroup) work(stop chan struct{}) {
	defer ig.n.wg.Done()
	for {
		c, got := ig.take(stop, false)
		switch got {
		case idle:
			ig.report(0, true)
			return
		case wasReset:
			ig.mu.Lock()
			stop = ig.stop
			ig.mu.Unlock()
			continue
		}
		if c.h.kind != kindData || c.h.flags&flagFirst == 0 {
			continue // the rest of an abandoned message
		}
		typ := websocket.MessageBinary
		if c.h.flags&flagText != 0 {
			typ = websocket.MessageText
		}
		r := &chunkReader{ig: ig, cur: c, stop: stop}
		var placed func()
		if c.h.flags&flagOrdered != 0 {
			seq := c.h.seq
			placed = func() { ig.n.sendPlaced(ig.key.epoch, seq, ig.g64) }
		}
		_ = ig.n.local.DeliverRemote(ig.group, c.h.from, c.h.to, typ, r, stop, placed)
		ig.report(r.consumed, true)
	}
}

// report tells the origin how far this node has consumed its messages to
// the group (an offset in the origin's bytes): at once when that moved by a
// quarter window since the last report, else within reportDelay (soon, when
// soon is set: the worker is about to wait, or a message ended), so that a
// flow of small messages costs a few reports a second, not one each.
func (ig *inGroup) report(consumed int64, soon bool) {
	ig.mu.Lock()
	ig.consumed = max(ig.consumed, consumed)
	consumed = ig.consumed
	if consumed == ig.reported {
		ig.mu.Unlock()
		return
	}
	if consumed-ig.reported < int64(ig.n.cfg.WindowBytes)/4 {
		if soon && ig.flush == nil {
			ig.flush = time.AfterFunc(reportDelay, ig.flushReport)
		}
		ig.mu.Unlock()
		return
	}
	ig.reported = consumed
	ig.mu.Unlock()
	ig.n.sendCredit(ig.key.epoch, consumed, ig.g64)
}

// reportDelay is how long a small amount of credit may wait to be reported.
const reportDelay = 5 * time.Millisecond

func (ig *inGroup) flushReport() {
	ig.mu.Lock()
	ig.flush = nil
	consumed := ig.consumed
	if consumed == ig.reported {
		ig.mu.Unlock()
		return
	}
	ig.reported = consumed
	ig.mu.Unlock()
	ig.n.sendCredit(ig.key.epoch, consumed, ig.g64)
}

// chunkReader reads one message's payload from its chunks as they arrive.
type chunkReader struct {
	ig       *inGroup
	cur      chunk
	pos      int
	stop     chan struct{}
	consumed int64
	err      error // sticky: the message ended (io.EOF) or was abandoned
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for r.pos == len(r.cur.payload) {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur.h.flags&flagLast != 0 {
			r.err = io.EOF
			continue
		}
		c, got := r.ig.take(r.stop, true)
		switch {
		case got != taken:
			r.err = errReset
		case c.h.kind == kindAbort:
			r.err = errAbort
		default:
			r.cur, r.pos = c, 0
		}
	}
	n := copy(p, r.cur.payload[r.pos:])
	r.pos += n
	r.consumed = r.cur.h.off + int64(r.pos)
	r.ig.report(r.consumed, false)
	return n, nil
}
