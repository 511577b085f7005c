package session

import (
	"errors"
	"sync"

	"github.com/wsproxy/wsproxy/internal/message"
)

var (
	// ErrClosed is returned by Push once the queue's session is closing.
	ErrClosed = errors.New("session closed")
	// ErrFull is returned by Push under the disconnect policy when the message
	// does not fit.
	ErrFull = errors.New("send queue full")
)

// Item is one message in a queue: either a whole message (Buf) or a streamed
// one (Cursor), never both. The queue owns the item's reference from Push
// until the writer takes it.
type Item struct {
	Buf    *message.Buf
	Cursor *message.Cursor
	// Enqueued is when the item was pushed (monotonic nanoseconds), for the
	// delivery latency histogram.
	Enqueued int64
}

// Size is the number of queue bytes the item takes.
func (it Item) Size() int64 {
	if it.Buf != nil {
		return int64(len(it.Buf.B))
	}
	return 0 // a stream's bytes are bounded by its ring, not by queues
}

// release gives up the item's reference without delivering it.
func (it Item) release() {
	if it.Buf != nil {
		it.Buf.Release()
	}
	if it.Cursor != nil {
		it.Cursor.Detach()
	}
}

// Queue is a session's outbound queue, bounded in bytes. Any number of
// goroutines push; one writer at a time takes. Bytes stay counted until the
// writer reports them written with Done, so the bound covers what is being
// written.
//
// A queue with a writer set (SetWriter) runs no goroutine while it has
// nothing to write: the first push to an idle queue starts the writer, and
// the writer stops (StopIfEmpty) when it finds nothing more.
type Queue struct {
	// Static after construction (SetWriter).
	limit int64
	start func() // starts a writer; called without mu held

	// Guarded by mu.
	mu      sync.Mutex
	items   []Item // FIFO
	bytes   int64
	pending int // items pushed and not yet Done
	closed  bool
	running bool          // a writer runs, or has been started
	kicked  bool          // Kick was called while a writer ran
	space   chan struct{} // closed and replaced when bytes are freed; nil if nobody waits
}

// NewQueue returns a queue holding at most limit bytes. A message larger than
// the limit is still accepted into an empty queue, so no message is too big
// for a receiver merely because of its queue size.
func NewQueue(limit int64) *Queue {
	return &Queue{limit: limit}
}

// SetWriter sets the function that starts a writer, before any push.
func (q *Queue) SetWriter(start func()) { q.start = start }

// Kick makes sure a writer runs, or will look at the queue once more before
// it stops: for something other than an item that needs the writer (a close
// request).
func (q *Queue) Kick() {
	q.mu.Lock()
	start := q.wantWriterLocked()
	if !start {
		q.kicked = true
	}
	q.mu.Unlock()
	if start {
		q.start()
	}
}

// wantWriterLocked marks a writer running and reports whether the caller
// must start it.
func (q *Queue) wantWriterLocked() bool {
	if q.running || q.start == nil {
		return false
	}
	q.running = true
	return true
}

// StopIfEmpty is called by the writer when it has taken everything: it
// reports whether the writer may stop, which it may only if nothing arrived
// (and no Kick came) since it last looked.
func (q *Queue) StopIfEmpty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 || q.kicked {
		q.kicked = false
		return false
	}
	q.running = false
	return true
}

// TryPush appends it if it fits. It returns ErrClosed or ErrFull otherwise,
// and in those cases the caller keeps its reference.
func (q *Queue) TryPush(it Item) error {
	_, err := q.push(it, false)
	return err
}

// Push appends it, waiting while the queue is full until it fits, the queue
// closes (ErrClosed), or stop closes (message.ErrStopped). On error the caller
// keeps its reference.
func (q *Queue) Push(it Item, stop <-chan struct{}) error {
	for {
		wait, err := q.push(it, true)
		if wait == nil {
			return err
		}
		select {
		case <-wait:
		case <-stop:
			return message.ErrStopped
		}
	}
}

// push appends it, or returns a channel to wait on when it does not fit and
// wait is set.
func (q *Queue) push(it Item, wait bool) (<-chan struct{}, error) {
	n := it.Size()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	// A stream item takes no bytes and always fits: its bytes are bounded by
	// its ring, and refusing it would lose the message for this receiver.
	if n > 0 && q.bytes > 0 && q.bytes+n > q.limit {
		if !wait {
			q.mu.Unlock()
			return nil, ErrFull
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		ch := q.space
		q.mu.Unlock()
		return ch, nil
	}
	q.items = append(q.items, it)
	q.bytes += n
	q.pending++
	start := q.wantWriterLocked()
	q.mu.Unlock()
	if start {
		q.start()
	}
	return nil, nil
}

// TakeAll moves every queued item to dst and returns it. Their bytes stay
// counted until Done. dst must be empty; its array becomes the queue's (the
// two swap, so nothing is copied).
func (q *Queue) TakeAll(dst []Item) []Item {
	q.mu.Lock()
	taken := q.items
	q.items = dst[:0]
	q.mu.Unlock()
	return taken
}

// Done reports a taken item of size bytes (Item.Size, taken before the item
// was written: writing releases it) written or dropped, freeing its room.
func (q *Queue) Done(size int64) { q.DoneN(1, size) }

// DoneN reports n taken items of size bytes in all written or dropped,
// freeing their room: Done for a whole run at once.
func (q *Queue) DoneN(n int, size int64) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	q.bytes -= size
	q.pending -= n
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.mu.Unlock()
}

// Bytes is the number of bytes queued or being written.
func (q *Queue) Bytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// Pending is the number of items pushed and not yet written or dropped.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending
}

// Idle reports whether every item pushed has been written or dropped.
func (q *Queue) Idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending == 0
}

// Close refuses further pushes, wakes every waiting pusher, and releases the
// items still waiting (not those the writer has taken: it drops them). Any
// goroutine may call it, any number of times.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	rest := q.items
	q.items = nil
	for _, it := range rest {
		q.bytes -= it.Size()
		q.pending--
	}
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.mu.Unlock()
	for _, it := range rest {
		it.release()
	}
}
