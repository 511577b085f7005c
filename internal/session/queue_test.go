package session

import (
	"errors"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/message"
)

func bufItem(n int) Item {
	b := message.GetBuf(n)
	b.B = b.B[:n]
	return Item{Buf: b}
}

// tryPush is q.TryPush that gives back the item's reference when q refuses
// it, as a caller must (the package's leak check counts every Buf).
func tryPush(q *Queue, it Item) error {
	err := q.TryPush(it)
	if err != nil {
		it.release()
	}
	return err
}

func TestQueueBoundInBytes(t *testing.T) {
	q := NewQueue(1000)
	if err := q.TryPush(bufItem(600)); err != nil {
		t.Fatal(err)
	}
	if err := q.TryPush(bufItem(400)); err != nil {
		t.Fatal("exactly at the bound must fit:", err)
	}
	if err := tryPush(q, bufItem(1)); !errors.Is(err, ErrFull) {
		t.Fatalf("over the bound: %v, want ErrFull", err)
	}
	if q.Bytes() != 1000 || q.Idle() {
		t.Fatalf("bytes %d idle %v", q.Bytes(), q.Idle())
	}
	// Taken items stay counted until Done: the bound covers what is being
	// written.
	items := q.TakeAll(nil)
	if len(items) != 2 || q.Bytes() != 1000 {
		t.Fatalf("took %d, bytes %d", len(items), q.Bytes())
	}
	if err := tryPush(q, bufItem(1)); !errors.Is(err, ErrFull) {
		t.Fatalf("after TakeAll: %v, want ErrFull", err)
	}
	for _, it := range items {
		size := it.Size()
		it.release()
		q.Done(size)
	}
	if q.Bytes() != 0 || !q.Idle() {
		t.Fatalf("after Done: bytes %d idle %v", q.Bytes(), q.Idle())
	}
}

func TestQueueAdmitsOversizedIntoEmpty(t *testing.T) {
	q := NewQueue(100)
	if err := q.TryPush(bufItem(5000)); err != nil {
		t.Fatalf("an oversized message into an empty queue: %v", err)
	}
	if err := tryPush(q, bufItem(1)); !errors.Is(err, ErrFull) {
		t.Fatalf("behind it: %v", err)
	}
	// A streamed message takes no queue bytes: it must fit even now, or the
	// receiver would miss it.
	st := message.NewStream(0, message.NewRingPool(16, nil))
	if err := q.TryPush(Item{Cursor: st.Attach()}); err != nil {
		t.Fatalf("stream item behind an oversized message: %v", err)
	}
	q.Close()
	st.Finish()
}

func TestQueuePushWaitsForRoom(t *testing.T) {
	q := NewQueue(100)
	_ = q.TryPush(bufItem(100))
	done := make(chan error, 1)
	go func() { done <- q.Push(bufItem(50), nil) }()
	select {
	case err := <-done:
		t.Fatalf("Push returned %v with no room", err)
	case <-time.After(30 * time.Millisecond):
	}
	it := q.TakeAll(nil)[0]
	size := it.Size()
	it.release()
	q.Done(size)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A waiting Push ends on stop, and on Close.
	if err := tryPush(q, bufItem(60)); !errors.Is(err, ErrFull) {
		t.Fatalf("50 queued + 60: %v, want ErrFull", err)
	}
	stop := make(chan struct{})
	close(stop)
	pending := bufItem(51) // 50 queued + 51 > 100
	if err := q.Push(pending, stop); !errors.Is(err, message.ErrStopped) {
		t.Fatalf("Push with stop closed: %v", err)
	}
	go func() { done <- q.Push(pending, nil) }()
	time.Sleep(10 * time.Millisecond)
	q.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Push across Close: %v", err)
	}
	pending.release()
	if err := tryPush(q, bufItem(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestQueueCloseReleases: Close drops what is queued and gives back its
// references and bytes.
func TestQueueCloseReleases(t *testing.T) {
	q := NewQueue(1 << 20)
	b := message.GetBuf(10)
	b.B = b.B[:10]
	b.Retain(1) // ours, besides the queue's
	if err := q.TryPush(Item{Buf: b}); err != nil {
		t.Fatal(err)
	}
	st := message.NewStream(0, message.NewRingPool(16, nil))
	if err := q.TryPush(Item{Cursor: st.Attach()}); err != nil {
		t.Fatal("a stream item takes no bytes and always fits:", err)
	}
	q.Close()
	if q.Bytes() != 0 || !q.Idle() {
		t.Fatalf("after Close: bytes %d idle %v", q.Bytes(), q.Idle())
	}
	st.Finish() // the cursor was detached by Close, so the ring is free
	b.Release() // ours: the queue's reference is already gone, or this panics below
	defer func() {
		if recover() == nil {
			t.Fatal("the queue did not release its reference")
		}
	}()
	b.Release()
}
