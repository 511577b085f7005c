package message

import (
	"errors"
	"io"
	"sync"

	"github.com/coder/websocket"
)

var (
	// ErrAborted is returned by Cursor.Next once the sender has abandoned the
	// message: what a receiver has of it is a partial message.
	ErrAborted = errors.New("message abandoned by its sender")
	// ErrStopped is returned when the caller's stop channel closes first.
	ErrStopped = errors.New("stopped")
)

// RingPool hands out the fixed-size rings that Streams pass through.
// Its size bounds the memory one streamed message can hold at once.
type RingPool struct {
	size   int
	budget *Budget
	pool   sync.Pool
}

// NewRingPool returns a pool of rings of size bytes, each acquired from bg
// while a Stream holds it (bg may be nil: no limit).
func NewRingPool(size int, bg *Budget) *RingPool {
	return &RingPool{size: size, budget: bg}
}

// Size is the ring size in bytes.
func (p *RingPool) Size() int { return p.size }

type ring struct{ b []byte }

func (p *RingPool) get() *ring {
	if v := p.pool.Get(); v != nil {
		return v.(*ring)
	}
	return &ring{b: make([]byte, p.size)}
}

// Stream is one message relayed as it arrives through a fixed ring, never held
// whole. It has one producer (the sender's reader) and one Cursor per
// receiver. The producer may only overwrite bytes every attached Cursor has
// passed, so a receiver that has not reached the message yet holds the
// producer back: memory stays at one ring whatever the message size.
//
// Producer methods (Space, Commit, Finish, Abort) must be called from one
// goroutine. Each Cursor is used by one goroutine. Every Cursor is detached
// exactly once; the ring returns to its pool when the producer has finished or
// aborted and every Cursor is detached.
type Stream struct {
	// Static after construction.
	Type websocket.MessageType
	pool *RingPool
	size int64

	// r is the ring: set at construction, given back to the pool (and set
	// to nil, under mu) once the producer has ended the message and every
	// cursor is detached; until then the producer and attached cursors use
	// it without the lock.
	r *ring

	space chan struct{} // wakes the producer when a Cursor advances or detaches

	// Guarded by mu.
	mu       sync.Mutex
	produced int64
	finished bool
	aborted  bool
	cursors  []*Cursor
}

// NewStream starts a streamed message of type typ using a ring from pool. If
// the pool has a budget, the caller must have acquired pool.Size() bytes from
// it: the ring gives them back when it returns to the pool.
func NewStream(typ websocket.MessageType, pool *RingPool) *Stream {
	r := pool.get()
	liveRings.Add(1)
	return &Stream{
		Type:  typ,
		pool:  pool,
		r:     r,
		size:  int64(len(r.b)),
		space: make(chan struct{}, 1),
	}
}

// Attach adds a receiver, starting at the first byte. Attach every receiver
// before the first Commit.
func (s *Stream) Attach() *Cursor {
	c := &Cursor{s: s, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	s.cursors = append(s.cursors, c)
	s.mu.Unlock()
	return c
}

// minPosLocked is the position of the slowest attached cursor, or produced
// when none is attached.
func (s *Stream) minPosLocked() int64 {
	m := s.produced
	for _, c := range s.cursors {
		m = min(m, c.pos)
	}
	return m
}

// Space waits until the ring has free room after the bytes produced so far
// and returns that room (contiguous, so possibly only part of it). The caller
// fills a prefix of it and passes the length to Commit.
func (s *Stream) Space(stop <-chan struct{}) ([]byte, error) {
	for {
		if room := s.Room(); room != nil {
			return room, nil
		}
		select {
		case <-s.space:
		case <-stop:
			return nil, ErrStopped
		}
	}
}

// Room is Space without the wait: nil when the ring is full.
func (s *Stream) Room() []byte {
	s.mu.Lock()
	free := s.size - (s.produced - s.minPosLocked())
	start := s.produced % s.size
	s.mu.Unlock()
	if free <= 0 {
		return nil
	}
	return s.r.b[start:min(start+free, s.size)]
}

// Commit publishes the next n bytes written into the room Space returned.
func (s *Stream) Commit(n int) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.produced += int64(n)
	s.wakeCursorsLocked()
	s.mu.Unlock()
}

// Finish marks the message complete. The producer must not use the stream
// afterwards.
func (s *Stream) Finish() { s.end(false) }

// Abort marks the message abandoned: every Cursor's Next returns ErrAborted.
// The producer must not use the stream afterwards.
func (s *Stream) Abort() { s.end(true) }

func (s *Stream) end(aborted bool) {
	s.mu.Lock()
	if aborted {
		s.aborted = true
	} else {
		s.finished = true
	}
	s.wakeCursorsLocked()
	s.releaseIfDoneLocked()
	s.mu.Unlock()
}

func (s *Stream) wakeCursorsLocked() {
	for _, c := range s.cursors {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func (s *Stream) releaseIfDoneLocked() {
	if (s.finished || s.aborted) && len(s.cursors) == 0 && s.r != nil {
		s.pool.pool.Put(s.r)
		s.r = nil
		liveRings.Add(-1)
		s.pool.budget.Release(int64(s.pool.size))
	}
}

func (s *Stream) wakeProducer() {
	select {
	case s.space <- struct{}{}:
	default:
	}
}

// Cursor is one receiver's place in a Stream. It is used by that receiver's
// writer alone.
type Cursor struct {
	s    *Stream
	wake chan struct{}

	pos      int64 // guarded by s.mu; written only by the owner
	detached bool  // owner only
}

// Stream returns the stream this cursor reads.
func (c *Cursor) Stream() *Stream { return c.s }

// Next waits for bytes this cursor has not read yet and returns them, without
// consuming them (see Advance). It returns io.EOF when the message is complete
// and read, ErrAborted once the sender has abandoned it, and ErrStopped if stop
// closes first. The returned slice is valid until the next Advance or Detach.
func (c *Cursor) Next(stop <-chan struct{}) ([]byte, error) {
	s := c.s
	for {
		s.mu.Lock()
		aborted, finished, produced := s.aborted, s.finished, s.produced
		s.mu.Unlock()
		switch {
		case aborted:
			return nil, ErrAborted
		case c.pos < produced:
			start := c.pos % s.size
			end := min(start+(produced-c.pos), s.size)
			return s.r.b[start:end], nil
		case finished:
			return nil, io.EOF
		}
		select {
		case <-c.wake:
		case <-stop:
			return nil, ErrStopped
		}
	}
}

// Advance consumes n bytes returned by Next.
func (c *Cursor) Advance(n int) {
	c.s.mu.Lock()
	c.pos += int64(n)
	c.s.mu.Unlock()
	c.s.wakeProducer()
}

// Waiting reports whether this cursor's receiver has started the message,
// written all of it that has been produced, and waits for more: the message
// is what holds it back. Any goroutine may call it.
func (c *Cursor) Waiting() bool {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	return !c.detached && c.pos > 0 && c.pos == s.produced && !s.finished && !s.aborted
}

// Started reports whether any byte has been consumed through this cursor.
func (c *Cursor) Started() bool { return c.pos > 0 }

// Detach removes the receiver from the stream so it no longer holds the
// producer back. Call it exactly once, when the receiver is done with the
// message for any reason.
func (c *Cursor) Detach() {
	s := c.s
	s.mu.Lock()
	if c.detached {
		s.mu.Unlock()
		panic("message: Cursor detached twice")
	}
	c.detached = true
	for i, x := range s.cursors {
		if x == c {
			last := len(s.cursors) - 1
			s.cursors[i] = s.cursors[last]
			s.cursors[last] = nil
			s.cursors = s.cursors[:last]
			break
		}
	}
	s.releaseIfDoneLocked()
	s.mu.Unlock()
	s.wakeProducer()
}
