package session

import (
	"sync/atomic"
	"testing"
)

// A queue with a writer starts it on the first push to an idle queue, never
// twice at once, and again after the writer stopped; Kick wakes a writer
// that is about to stop, or starts one.
func TestQueueStartsWriterOnDemand(t *testing.T) {
	q := NewQueue(1 << 20)
	var starts atomic.Int32
	q.SetWriter(func() { starts.Add(1) })

	if err := q.TryPush(bufItem(10)); err != nil {
		t.Fatal(err)
	}
	if err := q.TryPush(bufItem(10)); err != nil {
		t.Fatal(err)
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("%d writers started for two pushes, want 1", n)
	}
	if q.StopIfEmpty() {
		t.Fatal("the writer may stop with items queued")
	}
	drain := func() {
		for _, it := range q.TakeAll(nil) {
			size := it.Size()
			it.release()
			q.Done(size)
		}
	}
	drain()
	if !q.StopIfEmpty() {
		t.Fatal("the writer may not stop with nothing queued")
	}
	if err := q.TryPush(bufItem(10)); err != nil {
		t.Fatal(err)
	}
	if n := starts.Load(); n != 2 {
		t.Fatalf("a push after the writer stopped started %d writers in all, want 2", n)
	}
	drain()
	q.Kick() // a close request while the writer runs
	if q.StopIfEmpty() {
		t.Fatal("the writer may stop right after a Kick")
	}
	if !q.StopIfEmpty() {
		t.Fatal("a Kick counts once")
	}
	q.Kick() // with no writer running
	if n := starts.Load(); n != 3 {
		t.Fatalf("Kick with no writer running: %d starts in all, want 3", n)
	}
	q.Close()
}
