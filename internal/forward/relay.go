package forward

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/session"
	"github.com/wsproxy/wsproxy/internal/utf8stream"
)

// Why a sender's message was not forwarded. Each maps to a close code in
// closeFor.
var (
	errTooBig      = errors.New("message over --max-message-bytes")
	errInvalidUTF8 = errors.New("text message is not valid UTF-8")
	errStalled     = errors.New("message made no progress for --message-idle-timeout")
	errTruncated   = errors.New("connection dropped in the middle of a message")
)

// firstBufSize is the buffer a message is first read into; it grows by
// doubling up to --buffer-bytes.
const firstBufSize = 4 << 10

// source is one message being read, from a member's connection or from the
// admin API.
type source struct {
	r    io.Reader
	typ  websocket.MessageType
	from *session.Session // the sender, never delivered to; nil for the API
	// stop abandons any wait for receivers (the sender is closing).
	stop <-chan struct{}
	// truncated reports, at io.EOF, whether the message was cut short.
	truncated func() bool
	// watch, if set, is told of payload progress.
	watch *stallWatch
	// read counts payload bytes read so far.
	read int64
}

func (src *source) Read(p []byte, limit int64) (int, error) {
	n, err := src.r.Read(p)
	src.read += int64(n)
	if src.watch != nil && n > 0 {
		src.watch.progress(n)
	}
	if limit > 0 && src.read > limit {
		return n, errTooBig
	}
	if err == io.EOF && src.truncated != nil && src.truncated() {
		err = errTruncated
	}
	if err != nil && err != io.EOF && src.watch != nil && src.watch.stalled() {
		err = errStalled
	}
	return n, err
}

// relay reads one message from src and delivers it to every member of g other
// than src.from, or only to `only` when set. It returns the number of
// receivers the message was queued for.
//
// A message up to --buffer-bytes is read whole into one buffer that every
// receiver's queue shares. A larger one is relayed through a Stream as it
// arrives. Text is checked for UTF-8 before any of it is made visible to a
// receiver (for a stream: before each piece), so invalid text is never
// delivered as a message.
func (s *Server) relay(src *source, t target, only *session.Session) (int, error) {
	limit := s.opts.MaxMessageBytes
	b := message.GetBuf(min(firstBufSize, s.opts.BufferBytes))
	b.Type = src.typ
	for {
		if len(b.B) == cap(b.B) {
			if len(b.B) >= s.opts.BufferBytes {
				// Full at the threshold: one byte more makes it a stream.
				var probe [1]byte
				n, err := src.Read(probe[:], limit)
				if n == 1 {
					return s.relayStream(src, t, only, b, probe[0])
				}
				if err == io.EOF {
					break
				}
				b.Release()
				return 0, err
			}
			b = b.Grow(min(cap(b.B), s.opts.BufferBytes-len(b.B)))
		}
		n, err := src.Read(b.B[len(b.B):min(cap(b.B), s.opts.BufferBytes)], limit)
		b.B = b.B[:len(b.B)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Release()
			return 0, err
		}
	}
	if b.Type == websocket.MessageText && !utf8.Valid(b.B) {
		b.Release()
		return 0, errInvalidUTF8
	}
	s.received(src, int64(len(b.B)))

	it := session.Item{Buf: b, Enqueued: session.Now()}
	// One reference per receiver, taken in one go rather than one atomic
	// operation each (receivers' writers release theirs meanwhile): more
	// than there can be receivers (each is an open socket), the rest given
	// back at the end with this holder's.
	const refs = 1 << 30
	b.Retain(refs)
	delivered := 0
	t.each(src.from, only, func(m *session.Session) {
		if s.deliver(src, m, it) {
			delivered++
		}
	})
	b.ReleaseN(refs - delivered + 1)
	return delivered, nil
}

func (s *Server) received(src *source, n int64) {
	s.metrics.Received(src.typ, n)
	if src.from != nil {
		src.from.CountIn(n)
	}
}

// target is where a message goes: the members of some groups, or one member.
type target struct {
	groups []*group.Group // in name order when more than one
}

// each calls f for every receiver: only, if set, else every member of the
// target's groups; never from.
func (t target) each(from, only *session.Session, f func(*session.Session)) {
	if only != nil {
		if only != from {
			f(only)
		}
		return
	}
	for _, g := range t.groups {
		for _, m := range g.Members() {
			if m != from {
				f(m)
			}
		}
	}
}

// lockStreamOrder holds every target group's stream order, in name order so
// that two multi-group publishers cannot deadlock.
func (t target) lockStreamOrder() {
	for _, g := range t.groups {
		g.StreamOrder.Lock()
	}
}

func (t target) unlockStreamOrder() {
	for _, g := range t.groups {
		g.StreamOrder.Unlock()
	}
}

// deliver queues it for m as the slow-consumer policy says. It reports
// whether m took it; if not, the caller keeps the item's reference.
func (s *Server) deliver(src *source, m *session.Session, it session.Item) bool {
	err := m.TryPush(it)
	if err == nil {
		return true
	}
	if errors.Is(err, session.ErrClosed) {
		return false
	}
	if s.opts.SlowConsumer == Disconnect {
		m.Evict("queue_full")
		return false
	}
	// Backpressure: wait for room. The receiver's writer frees room as it
	// writes, and a receiver that accepts nothing for --write-timeout is
	// evicted, which ends the wait.
	if src.from != nil {
		src.from.Parked(true)
		defer src.from.Parked(false)
	}
	return m.Push(it, src.stop) == nil
}

// relayStream relays a message larger than --buffer-bytes. head holds its
// first --buffer-bytes and next is the byte after them. It takes over head.
func (s *Server) relayStream(src *source, t target, only *session.Session, head *message.Buf, next byte) (int, error) {
	st := message.NewStream(src.typ, s.rings)

	// Place the stream in every receiver's queue while holding the group's
	// stream order, so all receivers meet concurrent streams in one order.
	// A stream item takes no queue bytes, so these pushes never wait.
	t.lockStreamOrder()
	delivered := 0
	now := session.Now()
	t.each(src.from, only, func(m *session.Session) {
		cur := st.Attach()
		if err := m.TryPush(session.Item{Cursor: cur, Enqueued: now}); err != nil {
			cur.Detach()
			if !errors.Is(err, session.ErrClosed) {
				// Never silently: a receiver that cannot take the
				// message is closed. (A stream item always fits, so
				// this is a safety net.)
				m.Evict("queue_full")
			}
			return
		}
		delivered++
	})
	t.unlockStreamOrder()

	var v utf8stream.Validator
	text := src.typ == websocket.MessageText
	produce := func(p []byte) error {
		for len(p) > 0 {
			room, err := s.streamSpace(src, st)
			if err != nil {
				return err
			}
			n := copy(room, p)
			if text && !v.Write(room[:n]) {
				return errInvalidUTF8
			}
			st.Commit(n)
			p = p[n:]
		}
		return nil
	}
	err := produce(head.B)
	head.Release()
	if err == nil {
		err = produce([]byte{next})
	}
	for err == nil {
		var room []byte
		if room, err = s.streamSpace(src, st); err != nil {
			break
		}
		n, rerr := src.Read(room, s.opts.MaxMessageBytes)
		if n > 0 {
			if text && !v.Write(room[:n]) {
				err = errInvalidUTF8
				break
			}
			st.Commit(n)
		}
		if rerr == io.EOF {
			if text && !v.Close() {
				err = errInvalidUTF8
				break
			}
			st.Finish()
			s.received(src, src.read)
			return delivered, nil
		}
		err = rerr
	}
	st.Abort()
	return 0, err
}

// streamSpace waits for room in the stream's ring; while it waits, the
// sender is parked (its keepalive is the proxy's responsibility).
func (s *Server) streamSpace(src *source, st *message.Stream) ([]byte, error) {
	if src.from != nil {
		src.from.Parked(true)
		defer src.from.Parked(false)
	}
	return st.Space(src.stop)
}

// stallWatch closes in on a message that makes no progress: if no payload
// byte arrives for the timeout, it makes the socket's pending read fail.
// One per connection; start and stop bracket each message.
//
// Its timer is not reset per message (a timer reset costs more than relaying
// a small message): it ticks every timeout while messages come, and a tick
// that finds the same message at the same byte count as the previous tick
// declares it stalled. So a stall is noticed between one and two timeouts
// after the last progress (or the start of the message). A tick that finds
// no message in progress lets the timer lapse until the next start.
type stallWatch struct {
	nc      *hijack.Conn
	timeout time.Duration
	timer   *time.Timer

	bytes atomic.Int64 // payload read in the current message (the reader writes)
	stuck atomic.Bool

	// Guarded by mu, with the socket's read deadline.
	mu       sync.Mutex
	active   bool   // a message is in progress
	msg      uint64 // counts messages started
	armed    bool   // the timer is set
	seenMsg  uint64 // msg at the previous tick
	seen     int64  // bytes at the previous tick
	deadline bool   // the read deadline was forced into the past
}

func newStallWatch(nc *hijack.Conn, timeout time.Duration) *stallWatch {
	w := &stallWatch{nc: nc, timeout: timeout}
	w.timer = time.AfterFunc(time.Hour, w.tick)
	w.timer.Stop()
	return w
}

func (w *stallWatch) start() {
	w.bytes.Store(0)
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

func (w *stallWatch) progress(n int) { w.bytes.Add(int64(n)) }

func (w *stallWatch) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active {
		w.armed = false
		return
	}
	if b := w.bytes.Load(); w.msg != w.seenMsg || b != w.seen {
		w.seenMsg, w.seen = w.msg, b
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
