package session

import (
	"testing"

	"github.com/wsproxy/wsproxy/internal/message"
)

// The writer releases a Buf before reporting it Done; the room it frees must
// be what the item took when pushed, not the length of a Buf that may already
// be back in the pool (or holding another message).
func TestQueueDoneAfterRelease(t *testing.T) {
	q := NewQueue(1 << 10)
	b := message.GetBuf(600)
	b.B = b.B[:600]
	if err := q.TryPush(Item{Buf: b}); err != nil {
		t.Fatal(err)
	}
	items := q.TakeAll(nil)
	items[0].Buf.Release() // as the writer does after writing it
	q.Done(items[0])
	if got := q.Bytes(); got != 0 {
		t.Fatalf("Bytes() = %d after the only item was done, want 0", got)
	}
	// The room is really free: a message that only fits an empty queue fits.
	b2 := message.GetBuf(1 << 10)
	b2.B = b2.B[:1<<10]
	if err := q.TryPush(Item{Buf: b2}); err != nil {
		t.Fatalf("push into a drained queue: %v", err)
	}
	q.Close()
}
