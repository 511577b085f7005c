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
	QueueBytes   int64
	PingInterval time.Duration // 0: no keepalive pings
	PingTimeout  time.Duration
	// CloseGrace bounds how long a close handshake waits for the peer's answer.
	CloseGrace time.Duration
}

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

	// Owned by the running writer (one at a time: the queue hands over).
	batch []Item

	// Guarded by mu.
	mu          sync.Mutex
	closeCode   websocket.StatusCode
	closeReason string
	closeByPeer bool
	abortWrites bool
	pingTimer   *time.Timer
	pingStopped bool
	pingWG      sync.WaitGroup
	parked      int // >0 while the reader is waiting on other sessions' queues

	stats struct {
		sync.Mutex
		Stats
	}

	// Reader activity, for the shutdown drain. Written by the reader only.
	inMessage atomic.Bool
	marks     atomic.Uint64 // messages started plus messages ended
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
	}
	// The method value is made once: `go s.writeLoop()` would allocate a
	// closure each time the writer starts.
	writer := s.writeLoop
	s.q.SetWriter(func() { go writer() })
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

// Start runs the session: a writer whenever something is queued (no
// goroutine while idle), and the keepalive. Wait returns after both are done.
func (s *Session) Start() {
	if s.cfg.PingInterval > 0 {
		s.mu.Lock()
		s.pingTimer = time.AfterFunc(s.cfg.PingInterval, s.ping)
		s.mu.Unlock()
	}
}

// Closing is closed once the session has been asked to close.
func (s *Session) Closing() <-chan struct{} { return s.closing }

// Done is closed once the writer has exited and the socket is closed.
func (s *Session) Done() <-chan struct{} { return s.writerDone }

// Push queues an item, waiting for room as the backpressure policy says, until
// stop closes. On error the caller keeps its reference.
func (s *Session) Push(it Item, stop <-chan struct{}) error { return s.q.Push(it, stop) }

// TryPush queues an item if it fits now. On error the caller keeps its reference.
func (s *Session) TryPush(it Item) error { return s.q.TryPush(it) }

// QueuedBytes is the number of bytes waiting for this session or being written.
func (s *Session) QueuedBytes() int64 { return s.q.Bytes() }

// Idle reports whether nothing is queued for or being written to this session.
func (s *Session) Idle() bool { return s.q.Idle() }

// Close asks the session to close with code and reason. The first request
// wins. It returns at once; what was queued is dropped, the write in progress
// finishes, then the close frame is sent.
func (s *Session) Close(code websocket.StatusCode, reason string) {
	s.requestClose(code, reason, false, false)
}

// ClosedByPeer records that the peer ended the connection with code.
func (s *Session) ClosedByPeer(code websocket.StatusCode, reason string) {
	s.requestClose(code, reason, true, false)
}

// Evict closes a receiver that fell behind with 1008 "slow consumer", aborting
// the write in progress: its socket is presumed stuck.
func (s *Session) Evict(reason string) {
	if s.requestClose(websocket.StatusPolicyViolation, "slow consumer", false, true) {
		s.metrics.Evicted(reason)
		s.Log().Warn().Str("reason", reason).Int64("queued_bytes", s.q.Bytes()).Msg("evicting slow consumer")
	}
}

func (s *Session) requestClose(code websocket.StatusCode, reason string, byPeer, abort bool) bool {
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return false
	default:
	}
	s.closeCode, s.closeReason, s.closeByPeer, s.abortWrites = code, reason, byPeer, abort
	close(s.closing)
	s.mu.Unlock()
	if abort {
		s.nc.AbortWrites()
	}
	s.q.Kick() // the writer closes the socket
	return true
}

// CloseStatus is how the session ended (or is ending): the code, the reason,
// and whether the peer sent it. Zero before any close request.
func (s *Session) CloseStatus() (websocket.StatusCode, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCode, s.closeReason, s.closeByPeer
}

// Parked marks the reader as waiting on other sessions (true) or not (false).
// While parked, keepalive pings are skipped: the reader cannot read the pong,
// and the wait is the proxy's doing, not the client's.
func (s *Session) Parked(p bool) {
	s.mu.Lock()
	if p {
		s.parked++
	} else {
		s.parked--
	}
	s.mu.Unlock()
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

// writeStream relays a streamed message as its sender's bytes arrive. The
// WebSocket writer is opened only with the first bytes in hand, so a receiver
// that had not started a message its sender abandons gets nothing of it.
func (s *Session) writeStream(cur *message.Cursor, enqueued int64, dlv *metrics.Deliveries) error {
	defer cur.Detach()
	typ := cur.Stream().Type
	var w io.WriteCloser
	var n int64
	for {
		p, err := cur.Next(s.closing)
		switch {
		case err == nil:
			if w == nil {
				if w, err = s.conn.Writer(context.Background(), typ); err != nil {
					return err
				}
			}
			_, err = w.Write(p)
			cur.Advance(len(p))
			n += int64(len(p))
			if err != nil {
				return err
			}
		case err == io.EOF:
			if w == nil {
				err = s.conn.Write(context.Background(), typ, nil)
			} else {
				err = w.Close()
			}
			if err == nil {
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

// finish closes the socket after the writer stops, with the close frame the
// first close request asked for.
func (s *Session) finish(err error) {
	switch {
	case errors.Is(err, errSenderAborted):
		s.Close(StatusSenderAborted, "sender aborted")
	case errors.Is(err, hijack.ErrWritesAborted):
		// An eviction already recorded why.
	case errors.Is(err, hijack.ErrCloseSent):
		// The library has sent a close frame (answering the peer's, or
		// refusing its frames); the reader records why. Nothing more can be
		// sent.
		s.q.Close()
		_ = s.conn.CloseNow()
		return
	case errors.Is(err, hijack.ErrMidFrame):
		s.Log().Error().Err(err).Msg("writer bug")
		s.Close(websocket.StatusInternalError, "internal error")
	case err != io.EOF:
		// The socket failed under a write. A write that stalled past the
		// write timeout is a slow consumer; anything else is a dead peer.
		if isTimeout(err) {
			s.Evict("write_timeout")
		} else {
			s.Close(websocket.StatusAbnormalClosure, "write failed")
		}
	}
	s.q.Close()

	s.mu.Lock()
	code, reason, abort := s.closeCode, s.closeReason, s.abortWrites
	s.mu.Unlock()
	if abort || code == websocket.StatusAbnormalClosure {
		_ = s.conn.CloseNow()
		return
	}
	// Close waits for the peer's answer; a peer that never answers must not
	// hold the session (or a shutdown) for the library's 5 s.
	t := time.AfterFunc(s.cfg.CloseGrace, func() { _ = s.nc.Close() })
	_ = s.conn.Close(code, reason)
	t.Stop()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ping runs on its own short-lived goroutine each ping interval.
func (s *Session) ping() {
	s.mu.Lock()
	if s.pingStopped {
		s.mu.Unlock()
		return
	}
	skip := s.parked > 0
	s.pingWG.Add(1)
	s.mu.Unlock()
	defer s.pingWG.Done()

	if !skip {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PingTimeout)
		err := s.conn.Ping(ctx)
		cancel()
		if err != nil {
			select {
			case <-s.closing:
			default:
				s.Log().Info().Err(err).Msg("keepalive ping failed")
				s.Close(websocket.StatusPolicyViolation, "policy")
			}
			return
		}
	}
	s.mu.Lock()
	if !s.pingStopped {
		s.pingTimer.Reset(s.cfg.PingInterval)
	}
	s.mu.Unlock()
}

var epoch = time.Now()

// Now is a monotonic clock in nanoseconds, for Item.Enqueued.
func Now() int64 { return int64(time.Since(epoch)) }
