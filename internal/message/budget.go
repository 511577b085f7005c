package message

import (
	"sync"
	"sync/atomic"
	"time"
)

// Budget bounds the memory that messages pin across the whole process
// (--memory-limit): the Bufs being filled and held by queues, and the Stream
// rings. Whoever allocates for a message first acquires its size from the
// budget, waiting while the budget is spent; the memory is given back when
// the Buf's last holder releases it or the ring returns to its pool.
//
// A nil *Budget is no limit: every method is a no-op on it.
type Budget struct {
	limit int64
	used  atomic.Int64

	// Waiters register under mu and take freed, which Release closes (and
	// replaces) when anyone waits, so that no release is missed.
	mu       sync.Mutex
	waiting  atomic.Int32
	since    time.Time // when waiting last went from 0 to 1; guarded by mu
	freed    chan struct{}
	onWait   func() // called (in its own goroutine) when waiting goes from 0 to 1
	peakUsed atomic.Int64
}

// NewBudget returns a budget of limit bytes, or nil (no limit) for limit 0.
// onWait, if not nil, is started in a goroutine whenever a first reader
// begins to wait: it is how the owner learns it must free memory.
func NewBudget(limit int64, onWait func()) *Budget {
	if limit <= 0 {
		return nil
	}
	return &Budget{limit: limit, freed: make(chan struct{}), onWait: onWait}
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Used is how many bytes are acquired now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Peak is the most bytes ever acquired at once.
func (b *Budget) Peak() int64 {
	if b == nil {
		return 0
	}
	return b.peakUsed.Load()
}

// Waiting reports how many acquisitions are waiting, and since when someone
// has been waiting without a break.
func (b *Budget) Waiting() (int, time.Time) {
	if b == nil {
		return 0, time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(b.waiting.Load()), b.since
}

// TryAcquire acquires n bytes if the budget has them. Whatever the limit, an
// acquisition succeeds when nothing else is held, so that one message larger
// than the budget can still pass, alone.
func (b *Budget) TryAcquire(n int64) bool {
	if b == nil {
		return true
	}
	for {
		u := b.used.Load()
		if u > 0 && u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			if u+n > b.peakUsed.Load() {
				b.peakUsed.Store(u + n) // racy max: good enough for a gauge
			}
			return true
		}
	}
}

// Acquire acquires n bytes, waiting while the budget is spent. It returns
// ErrStopped, having acquired nothing, if stop closes first.
func (b *Budget) Acquire(n int64, stop <-chan struct{}) error {
	if b.TryAcquire(n) {
		return nil
	}
	b.mu.Lock()
	if b.waiting.Add(1) == 1 {
		b.since = time.Now()
		if b.onWait != nil {
			go b.onWait()
		}
	}
	ch := b.freed
	b.mu.Unlock()
	defer b.waiting.Add(-1)
	for {
		// Checked after registering: a release from now on closes ch.
		if b.TryAcquire(n) {
			return nil
		}
		select {
		case <-ch:
		case <-stop:
			return ErrStopped
		}
		b.mu.Lock()
		ch = b.freed
		b.mu.Unlock()
	}
}

// Release gives back n bytes acquired earlier.
func (b *Budget) Release(n int64) {
	if b == nil || n == 0 {
		return
	}
	if b.used.Add(-n) < 0 {
		panic("message: budget released more than acquired")
	}
	if b.waiting.Load() > 0 {
		b.mu.Lock()
		close(b.freed)
		b.freed = make(chan struct{})
		b.mu.Unlock()
	}
}
