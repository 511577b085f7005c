// Package message holds the two shapes a forwarded message takes in memory.
//
// A Buf is a message held whole: read once, then shared read-only by every
// receiver's queue, with no copy per receiver. A Stream is a message too large
// to hold whole: it passes through a fixed ring as it arrives, and each
// receiver reads it through its own Cursor. Both return their memory to a pool
// when the last holder lets go.
package message

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

const (
	minClassShift = 9  // 512 B
	maxClassShift = 31 // 2 GiB: larger than any --buffer-bytes we accept
)

var bufPools [maxClassShift + 1]sync.Pool

// liveBufs and liveRings count what Live reports.
var liveBufs, liveRings atomic.Int64

// Live reports how many Bufs are held (taken from GetBuf and not yet given
// back by their last Release) and how many Stream rings are held (taken by
// NewStream and not yet returned to their pool). It is for leak checks: once
// every connection and publish has ended, both must be 0; a holder that never
// releases shows here even though the garbage collector would hide it.
func Live() (bufs, rings int64) { return liveBufs.Load(), liveRings.Load() }

// Buf is one whole message. After it is filled, B is read-only; it may be
// read concurrently by any number of holders. Each holder calls Release once.
type Buf struct {
	B    []byte
	Type websocket.MessageType

	refs  atomic.Int32
	class uint8

	// budget, if set, is charged with the Buf's capacity until its last
	// Release.
	budget *Budget
}

// GetBuf returns an empty Buf with room for at least n bytes and one
// reference, owned by the caller.
func GetBuf(n int) *Buf {
	class := classFor(n)
	liveBufs.Add(1)
	if v := bufPools[class].Get(); v != nil {
		b := v.(*Buf)
		b.refs.Store(1)
		return b
	}
	b := &Buf{B: make([]byte, 0, 1<<class), class: uint8(class)}
	b.refs.Store(1)
	return b
}

func classFor(n int) int {
	if n <= 1<<minClassShift {
		return minClassShift
	}
	c := bits.Len(uint(n - 1))
	if c > maxClassShift {
		panic("message: buffer size out of range")
	}
	return c
}

// BufSize is the capacity GetBuf(n) returns.
func BufSize(n int) int { return 1 << classFor(n) }

// Charge records that b's capacity, BufSize of what it was made for, was
// acquired from bg by the caller: b's last Release gives it back. b must be
// fresh from GetBuf and have one reference.
func (b *Buf) Charge(bg *Budget) { b.budget = bg }

// Grow returns a Buf with the same contents and room for at least n more
// bytes. b must have exactly one reference; it is released. If b is charged
// to a budget, so is the new Buf, whose capacity (GrowSize(n)) the caller
// must have acquired from it; b's is given back.
func (b *Buf) Grow(n int) *Buf {
	if cap(b.B)-len(b.B) >= n {
		return b
	}
	nb := GetBuf(b.GrowSize(n))
	nb.B = append(nb.B, b.B...)
	nb.Type = b.Type
	nb.budget = b.budget
	b.Release()
	return nb
}

// GrowSize is the capacity of the Buf that Grow(n) returns, when b lacks
// room for n more bytes.
func (b *Buf) GrowSize(n int) int { return BufSize(max(2*cap(b.B), len(b.B)+n)) }

// Charged is how many bytes of a budget b holds (0 if it has none).
func (b *Buf) Charged() int64 {
	if b.budget == nil {
		return 0
	}
	return int64(cap(b.B))
}

// Retain adds n references, one for each new holder.
func (b *Buf) Retain(n int) { b.refs.Add(int32(n)) }

// Release drops one reference; the last one returns the memory to the pool.
// b must not be used after its holder's Release.
func (b *Buf) Release() { b.ReleaseN(1) }

// ReleaseN drops n references at once.
func (b *Buf) ReleaseN(n int) {
	switch r := b.refs.Add(-int32(n)); {
	case r == 0:
		liveBufs.Add(-1)
		if b.budget != nil {
			b.budget.Release(int64(cap(b.B)))
			b.budget = nil
		}
		b.B = b.B[:0]
		bufPools[b.class].Put(b)
	case r < 0:
		panic("message: Buf released too often")
	}
}
