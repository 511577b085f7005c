// Package session is one client connection: its socket, its bounded outbound
// queue, and the single writer that is the only code writing data to the socket.
//
// Whoever accepts the connection reads from it (see package forward) and hands
// messages for other members to their sessions with Push or TryPush. A session
// never blocks its pushers except through its queue bound.
package session

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// Close codes and reasons the proxy sends (SPEC section 6).
const (
	StatusReplaced      websocket.StatusCode = 4001
	StatusSenderAborted websocket.StatusCode = 4002
	StatusKicked        websocket.StatusCode = 4003
)

// Config is what a session needs to know of the server's settings.
type Config struct {
	QueueBytes int64
	// WriteTimeout: a receiver that accepts no bytes this long is evicted;
	// once evicted, the frame in progress and the close frame must go out
	// within it (0: no timeout; an eviction then allows CloseGrace).
	WriteTimeout time.Duration
	PingInterval time.Duration // 0: no keepalive pings
	PingTimeout  time.Duration
	// CloseGrace bounds how long a close handshake waits for the peer's answer.
	CloseGrace time.Duration
}

// Why a receiver was evicted: the label values of wsproxy_evictions_total.
const (
	EvictQueueFull    = "queue_full"    // disconnect policy: the queue had no room
	EvictWriteTimeout = "write_timeout" // accepted no bytes for the write timeout
	EvictMemory       = "memory"        // held the most of a spent memory budget
)

// Stats are a session's running totals. Reads are atomic per field.
type Stats struct {
	MessagesIn, BytesIn, MessagesOut, BytesOut int64
}

// Session is one connected client. All methods are safe for concurrent use.
type Session struct {
	// Static after construction.
	ID, Group string
	Remote    string
	Since     time.Time
	conn      *websocket.Conn
	nc        *hijack.Conn
	cfg       Config
	log       zerolog.Logger // the server's; Log adds this session's fields
	metrics   *metrics.Metrics
	q         *Queue

	closing    chan struct{} // closed by the first close request
	writerDone chan struct{} // closed when the writer has exited and the socket is closed
	readerDone chan struct{} // closed by ReaderDone

	// Owned by the running writer (one at a time: the queue hands over).
	batch []Item
	hdr   [hijack.MaxHeaderLen]byte // a streamed message's frame header
	out   net.Buffers               // a streamed message's frame

	// Guarded by mu.
	mu          sync.Mutex
	closeCode   websocket.StatusCode
	closeReason string
	closeByPeer bool
	evicted     bool
	pingTimer   *time.Timer
	pingStopped bool
	pingWG      sync.WaitGroup // Add under mu; Wait in Wait
	parked      int            // >0 while the reader waits on other sessions
	parks       uint64         // counts Park and Unpark calls

	stats struct {
		sync.Mutex
		Stats
	}

	// Reader activity, for the shutdown drain. Written by the reader only.
	inMessage atomic.Bool
	marks     atomic.Uint64 // messages started plus messages ended

	// What the reader's unfinished message pins of the memory budget, for
	// its reclaim. Written by the reader only.
	held      atomic.Int64
	heldSince atomic.Int64 // Now() when held last became non-zero
	memWait   atomic.Bool  // the reader waits for the budget
}

// New returns a session for an accepted connection; Start runs it.
func New(conn *websocket.Conn, nc *hijack.Conn, id, group string, cfg Config, log zerolog.Logger, m *metrics.Metrics) *Session {
	s := &Session{
		ID: id, Group: group,
		Remote:     nc.RemoteAddr().String(),
		Since:      time.Now(),
		conn:       conn,
		nc:         nc,
		cfg:        cfg,
		log:        log,
		metrics:    m,
		q:          NewQueue(cfg.QueueBytes),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	// The method value is made once: `go s.writeLoop()` would allocate a
	// closure each time the writer starts.
	writer := s.writeLoop
	s.q.SetWriter(func() { go writer() })
	nc.OnWriteStall(s.writeStalled)
	return s
}

// Conn is the WebSocket connection, for the reader. Only the reader may call
// its Reader method; nobody but this session writes data messages to it.
func (s *Session) Conn() *websocket.Conn { return s.conn }

// NetConn is the socket under the WebSocket connection.
func (s *Session) NetConn() *hijack.Conn { return s.nc }

// Log is the session's logger, with its id and group. It is built on each
// call, for the few lines a session logs, rather than kept for the
// connection's whole life.
func (s *Session) Log() *zerolog.Logger {
	l := s.log.With().Str("group", s.Group).Str("id", s.ID).Logger()
	return &l
}

// Start arms the keepalive. (The writer needs no starting: it runs whenever
// something is queued or a close is requested.) Wait returns after both the
// writer and the keepalive are done.
func (s *Session) Start() {
	if s.cfg.PingInterval > 0 {
		s.mu.Lock()
		s.pingTimer = time.AfterFunc(s.cfg.PingInterval, s.ping)
		s.mu.Unlock()
	}
}

// Closing is closed once the session has been asked to close.
func (s *Session) Closing() <-chan struct{} { return s.closing }

// ReaderDone tells the session that its reader has stopped reading: after
// the peer's close, a failure, or, once the session was closing, having
// read until the client answered the close frame (see finish). Call it once.
func (s *Session) ReaderDone() { close(s.readerDone) }

// Done is closed once the writer has exited and the socket is closed.
func (s *Session) Done() <-chan struct{} { return s.writerDone }

// Push queues an item, waiting for room as the backpressure policy says, until
// stop closes. On error the caller keeps its reference.
func (s *Session) Push(it Item, stop <-chan struct{}) error { return s.q.Push(it, stop) }

// TryPush queues an item if it fits now. On error the caller keeps its reference.
func (s *Session) TryPush(it Item) error { return s.q.TryPush(it) }

// QueuedBytes is the number of bytes waiting for this session or being written.
func (s *Session) QueuedBytes() int64 { return s.q.Bytes() }

// Pending is the number of messages queued for this session or being written.
func (s *Session) Pending() int { return s.q.Pending() }

// Idle reports whether nothing is queued for or being written to this session.
func (s *Session) Idle() bool { return s.q.Idle() }

// Close asks the session to close with code and reason. The first request
// wins. It returns at once: what was queued is dropped (pushers waiting for
// room get ErrClosed), the frame being written finishes, then the writer sends
// the close frame.
func (s *Session) Close(code websocket.StatusCode, reason string) {
	s.requestClose(code, reason, false, false)
}

// ClosedByPeer records that the peer ended the connection with code.
func (s *Session) ClosedByPeer(code websocket.StatusCode, reason string) {
	s.requestClose(code, reason, true, false)
}

// Evict closes a receiver that fell behind with 1008 "slow consumer", for
// reason (EvictQueueFull or EvictWriteTimeout). As for Close, its queue is
// dropped at once; the frame in progress and then the close frame must reach
// the socket within the write timeout, so that a client that resumes reading
// in time learns why it was closed. Past that its socket is cut.
func (s *Session) Evict(reason string) {
	if s.requestClose(websocket.StatusPolicyViolation, "slow consumer", false, true) {
		s.metrics.Evicted(reason)
		s.Log().Warn().Str("reason", reason).Int64("queued_bytes", s.q.Bytes()).Msg("evicting slow consumer")
	}
}

func (s *Session) requestClose(code websocket.StatusCode, reason string, byPeer, evict bool) bool {
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return false
	default:
	}
	s.closeCode, s.closeReason, s.closeByPeer, s.evicted = code, reason, byPeer, evict
	close(s.closing)
	s.mu.Unlock()
	if evict {
		s.limitWrites()
	}
	s.q.Close() // drops what is queued, wakes waiting pushers
	s.q.Kick()  // the writer finishes and closes the socket
	return true
}

// limitWrites bounds what is left to write (the frame in progress, the close
// frame) to the write timeout from now.
func (s *Session) limitWrites() {
	grace := s.cfg.WriteTimeout
	if grace <= 0 {
		grace = s.cfg.CloseGrace
	}
	s.nc.LimitWrites(time.Now().Add(grace))
}

// CloseStatus is how the session ended (or is ending): the code, the reason,
// and whether the peer sent it. Zero before any close request.
func (s *Session) CloseStatus() (websocket.StatusCode, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode, s.closeReason, s.closeByPeer
}

// Park marks the reader as waiting on other sessions (for room in a queue or
// in a stream's ring), until the matching Unpark. The wait is the proxy's
// doing, never the client's: while parked, no keepalive ping is sent, a ping
// already in flight is not held against the client (the reader cannot read
// the pong), and a message does not count as stalled (see Parks).
func (s *Session) Park() {
	s.mu.Lock()
	s.parked++
	s.parks++
	s.mu.Unlock()
}

// Unpark ends a Park.
func (s *Session) Unpark() {
	s.mu.Lock()
	s.parked--
	s.parks++
	s.mu.Unlock()
}

// Parks reports whether the reader is parked now, and a count that changes
// whenever it parks or unparks: a caller that sees the same count twice and
// not parked knows the reader was not parked in between.
func (s *Session) Parks() (parked bool, count uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parked > 0, s.parks
}

// BeginMessage and EndMessage bracket each message the reader reads. They
// take no clock reading (that would cost more than the rest of them): the
// shutdown drain watches Activity over time instead.
func (s *Session) BeginMessage() {
	s.inMessage.Store(true)
	s.marks.Add(1)
}

// EndMessage: see BeginMessage.
func (s *Session) EndMessage() {
	s.inMessage.Store(false)
	s.marks.Add(1)
}

// Activity reports whether the reader is inside a message, and a count that
// changes whenever it starts or finishes one.
func (s *Session) Activity() (inMessage bool, marks uint64) {
	return s.inMessage.Load(), s.marks.Load()
}

// SetHeld records how many bytes of the memory budget the reader's
// unfinished message holds (0 when it has none).
func (s *Session) SetHeld(n int64) {
	if n > 0 && s.held.Load() == 0 {
		s.heldSince.Store(Now())
	}
	s.held.Store(n)
}

// Held reports what SetHeld recorded, and for how long the reader has held
// budget without a break.
func (s *Session) Held() (int64, time.Duration) {
	n := s.held.Load()
	if n == 0 {
		return 0, 0
	}
	return n, time.Duration(Now() - s.heldSince.Load())
}

// SetMemoryWait records whether the reader waits for the memory budget.
func (s *Session) SetMemoryWait(w bool) { s.memWait.Store(w) }

// MemoryWait reports what SetMemoryWait recorded.
func (s *Session) MemoryWait() bool { return s.memWait.Load() }

// CountIn adds a received message to the session's totals.
func (s *Session) CountIn(n int64) {
	s.stats.Lock()
	s.stats.MessagesIn++
	s.stats.BytesIn += n
	s.stats.Unlock()
}

// Stats returns the session's totals so far.
func (s *Session) Stats() Stats {
	s.stats.Lock()
	defer s.stats.Unlock()
	return s.stats.Stats
}

// Wait blocks until the writer and any keepalive ping have returned.
func (s *Session) Wait() {
	<-s.writerDone
	s.mu.Lock()
	s.pingStopped = true
	if s.pingTimer != nil {
		s.pingTimer.Stop()
	}
	s.mu.Unlock()
	s.pingWG.Wait()
}

// errSenderAborted ends a receiver that was part-way through a message its
// sender abandoned.
var errSenderAborted = errors.New("sender aborted the message being delivered")

// writeLoop is the only code that writes data to the socket. It runs while
// there is something to write: it stops when it finds the queue empty, and
// the next push starts it again. Once the session is closing it finishes the
// connection and closes writerDone.
func (s *Session) writeLoop() {
	batch := s.batch
	var dlv metrics.Deliveries
	var err error
	for err == nil {
		select {
		case <-s.closing:
			err = io.EOF
			continue
		default:
		}
		batch = s.q.TakeAll(batch[:0])
		if len(batch) == 0 {
			// Hand the array to the next writer before the queue can
			// start one; do not keep a burst's worth while idle.
			s.batch = batch
			if cap(batch) > maxIdleBatch {
				s.batch = nil
			}
			if s.q.StopIfEmpty() {
				return
			}
			continue
		}
		for i := 0; i < len(batch); {
			if err == nil {
				select {
				case <-s.closing:
					err = io.EOF
				default:
				}
			}
			switch {
			case err != nil:
				size := batch[i].Size()
				batch[i].release()
				s.q.Done(size)
				i++
			case batch[i].Buf == nil:
				err = s.writeStream(batch[i].Cursor, batch[i].Enqueued, &dlv)
				s.q.Done(0)
				i++
			default:
				i, err = s.writeRun(batch, i, &dlv)
			}
		}
		clear(batch)
		s.delivered(&dlv)
	}
	s.batch = nil
	s.finish(err)
	close(s.writerDone)
}

// maxIdleBatch is the largest batch array a writer keeps when it stops.
const maxIdleBatch = 64

// runBytes is about how many bytes of whole messages the writer hands to the
// socket in one go (one writev) before it frees their room in the queue.
const runBytes = 64 << 10

// copyMax is the largest payload a run copies next to the frame headers; a
// larger one is written from its Buf.
const copyMax = 1 << 10

// run is the frames of a run of whole messages, ready for one writev: frame
// headers and small payloads copied into buf, larger payloads by reference.
type run struct {
	buf  []byte      // never grows past its capacity: bufs point into it
	bufs net.Buffers // what WriteFrames consumes
	vec  net.Buffers // bufs' backing array, kept across uses
}

var runs = sync.Pool{New: func() any { return &run{buf: make([]byte, 0, runBytes+hijack.MaxHeaderLen)} }}

// writeRun writes whole messages from batch[i:] as data frames, in one go,
// until about runBytes are written, a streamed message comes next, or the
// session is closing. It gives up their references, marks them done, and
// returns where it stopped.
//
// The frames go to the socket through hijack.Conn.WriteFrames rather than
// through the library, which would flush (one system call) and take its
// channel-based locks for every message; hijack.Conn keeps them from landing
// inside a frame the library is writing, and from following a close frame.
func (s *Session) writeRun(batch []Item, i int, dlv *metrics.Deliveries) (int, error) {
	r := runs.Get().(*run)
	buf, bufs := r.buf[:0], r.vec[:0]
	seg := 0   // where the part of buf not yet in bufs begins
	total := 0 // frame bytes in the run
	j := i
	var err error
	for ; j < len(batch) && batch[j].Buf != nil; j++ {
		b := batch[j].Buf
		size := hijack.MaxHeaderLen + len(b.B)
		if j > i {
			if total+size > runBytes {
				break
			}
			select {
			case <-s.closing:
				err = io.EOF
			default:
			}
			if err != nil {
				break
			}
		}
		total += size
		buf = hijack.AppendHeader(buf, b.Type == websocket.MessageText, len(b.B))
		if len(b.B) <= copyMax {
			buf = append(buf, b.B...)
			continue
		}
		bufs = append(bufs, buf[seg:], b.B)
		seg = len(buf)
	}
	if seg < len(buf) {
		bufs = append(bufs, buf[seg:])
	}
	r.vec = bufs[:0]
	if err == nil {
		// Through r, which is on the heap already: &bufs would move
		// bufs there, one allocation per run.
		r.bufs = bufs
		err = s.nc.WriteFrames(&r.bufs)
		r.bufs = nil
	}
	now := Now()
	var size int64
	for _, it := range batch[i:j] {
		n := it.Size()
		if err == nil {
			dlv.Add(it.Buf.Type, n, time.Duration(now-it.Enqueued))
		}
		size += n
		it.Buf.Release()
	}
	clear(r.vec[:cap(r.vec)])
	r.buf = buf[:0]
	runs.Put(r)
	if err == io.EOF && j < len(batch) && batch[j].Buf != nil {
		// Not written: the session is closing.
		size += batch[j].Size()
		batch[j].Buf.Release()
		j++
	}
	s.q.DoneN(j-i, size)
	return j, err
}

// writeStream relays a streamed message as its sender's bytes arrive, each
// piece as one frame of a fragmented message. The first frame goes out only
// with the first bytes in hand, so a receiver that had not started a message
// its sender abandons gets nothing of it. Once the session is closing it stops
// after the frame in progress: the close frame follows a partial message,
// which clients discard.
func (s *Session) writeStream(cur *message.Cursor, enqueued int64, dlv *metrics.Deliveries) error {
	defer cur.Detach()
	typ := cur.Stream().Type
	op := hijack.OpBinary
	if typ == websocket.MessageText {
		op = hijack.OpText
	}
	var n int64
	for {
		p, err := cur.Next(s.closing)
		switch {
		case err == nil:
			err = s.writeFrame(op, false, p)
			op = hijack.OpContinuation
			cur.Advance(len(p))
			n += int64(len(p))
			if err != nil {
				return err
			}
			select {
			case <-s.closing:
				return io.EOF
			default:
			}
		case err == io.EOF:
			if err = s.writeFrame(op, true, nil); err == nil {
				dlv.Add(typ, n, time.Duration(Now()-enqueued))
			}
			return err
		case errors.Is(err, message.ErrAborted):
			if cur.Started() {
				return errSenderAborted
			}
			return nil
		default: // closing
			return io.EOF
		}
	}
}

// writeFrame writes one data frame of a streamed message.
func (s *Session) writeFrame(op hijack.Opcode, fin bool, p []byte) error {
	s.out = append(s.out[:0], hijack.AppendFrameHeader(s.hdr[:0], op, fin, len(p)), p)
	err := s.nc.WriteFrames(&s.out)
	clear(s.out[:cap(s.out)])
	return err
}

// writeStalled runs when the socket has accepted no bytes for the write
// timeout, in the middle of a write (see hijack.Conn.OnWriteStall): the
// receiver is evicted, and the write goes on within the eviction's limit, so
// that a client that was only pausing reads whole frames, then the close
// frame that says why.
func (s *Session) writeStalled() {
	s.Evict(EvictWriteTimeout)
	s.limitWrites() // also when an earlier close request was not an eviction
}

// delivered adds what the writer delivered since the last call to the
// session's totals and the metrics, and empties dlv.
func (s *Session) delivered(dlv *metrics.Deliveries) {
	msgs, bytes := dlv.Totals()
	if msgs == 0 {
		return
	}
	s.stats.Lock()
	s.stats.MessagesOut += msgs
	s.stats.BytesOut += bytes
	s.stats.Unlock()
	s.metrics.AddDeliveries(dlv)
}

// finish closes the socket after the writer stops: it sends the close frame
// the first close request asked for (within the write limits: the socket may
// be full), waits at most CloseGrace for the client's answer, and closes.
func (s *Session) finish(err error) {
	s.q.Close() // normally closed already by the close request
	switch {
	case errors.Is(err, errSenderAborted):
		s.Close(StatusSenderAborted, "sender aborted")
	case errors.Is(err, hijack.ErrCloseSent):
		// The library has sent a close frame (answering the peer's, or
		// refusing its frames); the reader records why. Nothing more can be
		// sent.
		_ = s.conn.CloseNow()
		return
	case errors.Is(err, hijack.ErrMidFrame):
		s.Log().Error().Err(err).Msg("writer bug")
		s.Close(websocket.StatusInternalError, "internal error")
	case err != io.EOF:
		// The socket failed under a write: a write stuck past the limits
		// (an evicted receiver that read nothing, or a shutdown cutting it
		// off), or a dead peer. Nothing can follow a frame cut in half.
		if isTimeout(err) {
			s.Evict(EvictWriteTimeout)
		} else {
			s.Close(websocket.StatusAbnormalClosure, "write failed")
		}
		_ = s.conn.CloseNow()
		return
	}

	code, reason, _ := s.CloseStatus()
	if code == websocket.StatusAbnormalClosure || code == websocket.StatusNoStatusRcvd {
		_ = s.conn.CloseNow() // no close frame can carry these
		return
	}
	// The close frame goes out through hijack.Conn, under the write timeout
	// and any eviction limit (the library would give up after 5 s). The
	// library's own close frame that follows is dropped by hijack.Conn; it
	// then waits for the client's answer, which a client that never answers
	// must not make last the library's 5 s.
	if err := s.nc.WriteClose(uint16(code), reason); err != nil && !errors.Is(err, hijack.ErrCloseSent) {
		_ = s.conn.CloseNow()
		return
	}
	//
	// The session's reader reads on (see ReaderDone) until the client's
	// answer, answering its pings meanwhile; the library, asked to close,
	// would give up at the first ping. If the reader stopped in the middle
	// of a message, the library's Close reads the rest.
	w := &closeWait{s: s, unacked: s.nc.Unacked(), cut: make(chan struct{})}
	w.mu.Lock()
	w.timer = time.AfterFunc(s.cfg.CloseGrace, w.check)
	w.mu.Unlock()
	select {
	case <-s.readerDone:
	case <-w.cut:
	}
	_ = s.conn.Close(code, reason)
	w.mu.Lock()
	w.timer.Stop()
	w.mu.Unlock()
}

// closeWait bounds the wait for a client's answer to the proxy's close frame:
// CloseGrace, and then, for a client still reading what was sent before the
// close frame (a slow reader, or one that resumed after an eviction), for as
// long as it keeps taking bytes, until it takes none for the write timeout.
// Cutting the socket while the client reads would reset the connection, and
// the client would lose the close frame, and perhaps data, from its receive
// buffer. What it waits for is finite: the bytes in the socket.
type closeWait struct {
	s   *Session
	cut chan struct{} // closed when the socket is cut

	mu      sync.Mutex
	timer   *time.Timer
	unacked int // the socket's unacknowledged bytes at the previous check
}

func (w *closeWait) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.s.nc.Unacked(); n > 0 && n < w.unacked {
		w.unacked = n
		w.timer.Reset(max(w.s.cfg.WriteTimeout, w.s.cfg.CloseGrace))
		return
	}
	_ = w.s.nc.Close()
	close(w.cut)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ping runs on its own short-lived goroutine each ping interval. No ping is
// sent while the reader is parked; a ping in flight when it parks is not held
// against the client (see Park). A client that does not answer in time is
// closed with 1008; the library is never given a deadline, because any
// deadline it meets closes the whole connection without a close frame.
func (s *Session) ping() {
	s.mu.Lock()
	if s.pingStopped {
		s.mu.Unlock()
		return
	}
	if s.parked > 0 {
		s.pingTimer.Reset(s.cfg.PingInterval)
		s.mu.Unlock()
		return
	}
	s.pingWG.Add(1)
	w := &pongWait{s: s, parks: s.parks}
	s.mu.Unlock()
	defer s.pingWG.Done()

	w.mu.Lock()
	w.timer = time.AfterFunc(s.cfg.PingTimeout, w.expired)
	w.mu.Unlock()
	err := s.conn.Ping(context.Background()) // returns once answered or closed
	w.mu.Lock()
	w.timer.Stop()
	w.done = true
	w.mu.Unlock()
	if err != nil {
		return // the connection is closing
	}
	s.mu.Lock()
	if !s.pingStopped {
		s.pingTimer.Reset(s.cfg.PingInterval)
	}
	s.mu.Unlock()
}

// pongWait times one ping's answer.
type pongWait struct {
	s *Session

	mu    sync.Mutex
	timer *time.Timer
	parks uint64 // the session's park count when the wait (re)started
	done  bool
}

// expired runs when a ping has waited PingTimeout: if the reader parked
// meanwhile, the pong may be unread in its socket, so the wait starts again;
// otherwise the client is closed.
func (w *pongWait) expired() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if parked, parks := w.s.Parks(); parked || parks != w.parks {
		w.parks = parks
		w.timer.Reset(w.s.cfg.PingTimeout)
		return
	}
	w.s.Log().Info().Msg("keepalive: no pong within the ping timeout")
	w.s.Close(websocket.StatusPolicyViolation, "policy")
}

var epoch = time.Now()

// Now is a monotonic clock in nanoseconds, for Item.Enqueued.
func Now() int64 { return int64(time.Since(epoch)) }
