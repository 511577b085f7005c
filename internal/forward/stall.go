package forward

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/session"
)

// stallWatch closes in on a message that makes too little progress (SPEC
// section 3; docs/protocol.md "Stalled messages"): if it finds the message
// stalled, it makes the socket's pending read fail, and the sender is closed
// with 1008 "message stalled". One per connection; start and stop bracket
// each message.
//
// A message is stalled when, over one whole period of --message-idle-timeout:
//   - no payload byte arrived on the socket (any byte counts, whatever the
//     framing; empty fragments do not), or
//   - it is a streamed message holding other messages back (a receiver has
//     written all of it that has arrived and has another message queued
//     behind it), and less than minHold bytes (--buffer-bytes) arrived: one
//     member cannot hold its group for much longer than the timeout by
//     trickling.
//
// A period in which the sender was parked, waiting for receivers, never
// counts: that wait is the proxy's doing, never the sender's.
//
// Its timer is not reset per message (a timer reset costs more than relaying
// a small message): it ticks every timeout while messages come, and each tick
// judges the period since the previous one. So a stall is noticed between one
// and two timeouts after progress stops. A tick that finds no message in
// progress lets the timer lapse until the next start.
type stallWatch struct {
	// Static after construction.
	nc      *hijack.Conn
	sess    *session.Session
	timeout time.Duration
	minHold int64
	timer   *time.Timer

	stuck atomic.Bool

	// Guarded by mu, with the socket's read deadline.
	mu        sync.Mutex
	active    bool        // a message is in progress
	msg       uint64      // counts messages started
	armed     bool        // the timer is set
	holds     func() bool // set while a streamed message is relayed
	seenMsg   uint64      // at the previous tick: msg,
	seenBytes int64       // the socket's payload count,
	seenParks uint64      // and the sender's park count
	deadline  bool        // the read deadline was forced into the past
}

func newStallWatch(sess *session.Session, timeout time.Duration, minHold int) *stallWatch {
	w := &stallWatch{nc: sess.NetConn(), sess: sess, timeout: timeout, minHold: int64(minHold)}
	w.timer = time.AfterFunc(time.Hour, w.tick)
	w.timer.Stop()
	return w
}

func (w *stallWatch) start() {
	w.stuck.Store(false)
	w.mu.Lock()
	w.active = true
	w.msg++
	if !w.armed {
		w.armed = true
		w.timer.Reset(w.timeout)
	}
	w.mu.Unlock()
}

// holding sets (or, with nil, clears) the check of whether the streamed
// message being relayed holds other messages back.
func (w *stallWatch) holding(f func() bool) {
	w.mu.Lock()
	w.holds = f
	w.mu.Unlock()
}

func (w *stallWatch) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active {
		w.armed = false
		return
	}
	bytes := w.nc.PayloadIn()
	parked, parks := w.sess.Parks()
	moved := bytes - w.seenBytes
	// A message that started within the period, or a sender that was
	// parked at any time in it, gets a whole period more.
	excused := w.msg != w.seenMsg || parked || parks != w.seenParks
	w.seenMsg, w.seenBytes, w.seenParks = w.msg, bytes, parks
	if excused || (moved > 0 && (moved >= w.minHold || w.holds == nil || !w.holds())) {
		w.timer.Reset(w.timeout)
		return
	}
	w.armed = false
	w.stuck.Store(true)
	w.deadline = true
	_ = w.nc.SetReadDeadline(time.Unix(1, 0))
}

func (w *stallWatch) stalled() bool { return w.stuck.Load() }

// stop ends the watch over the current message. After it returns, the watch
// does not touch the socket until the next start.
func (w *stallWatch) stop() {
	w.mu.Lock()
	w.active = false
	if w.deadline {
		w.deadline = false
		_ = w.nc.SetReadDeadline(time.Time{})
	}
	w.mu.Unlock()
}

// close stops the timer for good.
func (w *stallWatch) close() {
	w.stop()
	w.timer.Stop()
}
