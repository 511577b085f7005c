package message

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// produce writes data through the stream in pieces of random size.
func produce(t *testing.T, st *Stream, data []byte, rng *rand.Rand) {
	t.Helper()
	for len(data) > 0 {
		room, err := st.Space(nil)
		if err != nil {
			t.Error(err)
			return
		}
		n := min(len(room), len(data), 1+rng.IntN(100))
		copy(room, data[:n])
		st.Commit(n)
		data = data[n:]
	}
	st.Finish()
}

func consume(c *Cursor, maxPiece int, rng *rand.Rand) ([]byte, error) {
	defer c.Detach()
	var got []byte
	for {
		p, err := c.Next(nil)
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		n := min(len(p), 1+rng.IntN(maxPiece))
		got = append(got, p[:n]...)
		c.Advance(n)
	}
}

// TestStreamManyCursorsWrapAround: every cursor reads every byte in order
// through a ring far smaller than the message, whatever the piece sizes.
func TestStreamManyCursorsWrapAround(t *testing.T) {
	pool := NewRingPool(64, nil)
	data := make([]byte, 10_000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	st := NewStream(websocket.MessageBinary, pool)
	const readers = 5
	var cursors []*Cursor
	for range readers {
		cursors = append(cursors, st.Attach())
	}
	var wg sync.WaitGroup
	results := make([][]byte, readers)
	for i, c := range cursors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			results[i], err = consume(c, 1+i*20, rand.New(rand.NewPCG(uint64(i), 1)))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	produce(t, st, data, rng)
	wg.Wait()
	for i, got := range results {
		if !bytes.Equal(got, data) {
			t.Fatalf("cursor %d: got %d bytes, differing", i, len(got))
		}
	}
	if st.r != nil {
		t.Fatal("ring not returned to the pool after the last detach")
	}
}

// TestStreamProducerWaitsForSlowestCursor: the producer cannot get more than a
// ring ahead of an attached cursor that has not read anything.
func TestStreamProducerWaitsForSlowestCursor(t *testing.T) {
	st := NewStream(websocket.MessageBinary, NewRingPool(16, nil))
	slow := st.Attach()
	room, err := st.Space(nil)
	if err != nil || len(room) != 16 {
		t.Fatalf("room %d, %v", len(room), err)
	}
	st.Commit(16)
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { _, err := st.Space(stop); errc <- err }()
	select {
	case err := <-errc:
		t.Fatalf("Space returned (%v) with the ring full", err)
	case <-time.After(50 * time.Millisecond):
	}
	slow.Advance(4)
	if err := <-errc; err != nil {
		t.Fatalf("Space after Advance: %v", err)
	}
	room, _ = st.Space(nil)
	if len(room) != 4 {
		t.Fatalf("room after freeing 4 bytes = %d", len(room))
	}
	// A full ring and a closed stop channel: Space gives up.
	st.Commit(4)
	close(stop)
	if _, err := st.Space(stop); !errors.Is(err, ErrStopped) {
		t.Fatalf("Space with stop closed: %v", err)
	}
	// Detaching the slow cursor frees everything.
	slow.Detach()
	if room, _ = st.Space(nil); len(room) == 0 {
		t.Fatal("no room after the only cursor detached")
	}
	st.Abort()
}

// TestStreamAbort: cursors see ErrAborted, whether they started or not.
func TestStreamAbort(t *testing.T) {
	st := NewStream(websocket.MessageText, NewRingPool(32, nil))
	started, idle := st.Attach(), st.Attach()
	room, _ := st.Space(nil)
	copy(room, "hello")
	st.Commit(5)
	p, _ := started.Next(nil)
	started.Advance(len(p))
	st.Abort()
	for _, c := range []*Cursor{started, idle} {
		if _, err := c.Next(nil); !errors.Is(err, ErrAborted) {
			t.Fatalf("Next after abort: %v", err)
		}
	}
	if !started.Started() || idle.Started() {
		t.Fatal("Started is wrong")
	}
	started.Detach()
	idle.Detach()
	if st.r != nil {
		t.Fatal("ring not released")
	}
}

func TestCursorNextStops(t *testing.T) {
	st := NewStream(websocket.MessageText, NewRingPool(32, nil))
	c := st.Attach()
	stop := make(chan struct{})
	close(stop)
	if _, err := c.Next(stop); !errors.Is(err, ErrStopped) {
		t.Fatalf("Next with stop closed: %v", err)
	}
	c.Detach()
	st.Finish()
}

func TestBufPoolAndGrow(t *testing.T) {
	b := GetBuf(100)
	if cap(b.B) != 512 || len(b.B) != 0 {
		t.Fatalf("cap %d len %d", cap(b.B), len(b.B))
	}
	b.B = append(b.B, "abc"...)
	b.Type = websocket.MessageText
	b = b.Grow(1000)
	if cap(b.B) < 1003 || string(b.B) != "abc" || b.Type != websocket.MessageText {
		t.Fatalf("after Grow: cap %d %q %v", cap(b.B), b.B, b.Type)
	}
	b.Retain(2)
	b.Release()
	b.Release()
	b.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("over-release did not panic")
		}
	}()
	b.Release()
}
