package message

import (
	"sync"
	"testing"
	"time"
)

func TestBudgetNilIsNoLimit(t *testing.T) {
	var b *Budget
	if !b.TryAcquire(1<<40) || b.Acquire(1<<40, nil) != nil {
		t.Fatal("a nil budget refused")
	}
	b.Release(1 << 40)
	if NewBudget(0, nil) != nil {
		t.Fatal("NewBudget(0) is a limit")
	}
}

// TestBudgetBounds: acquisitions never take the budget over its limit; a
// waiter gets its bytes once enough are released, and gives up when stopped.
func TestBudgetBounds(t *testing.T) {
	waits := make(chan struct{}, 10)
	b := NewBudget(100, func() { waits <- struct{}{} })
	if !b.TryAcquire(60) || !b.TryAcquire(40) {
		t.Fatal("acquisitions within the limit refused")
	}
	if b.TryAcquire(1) {
		t.Fatal("acquired past the limit")
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(30, nil) }()
	select {
	case <-waits: // the owner learns someone waits
	case <-time.After(10 * time.Second):
		t.Fatal("onWait not called")
	}
	if n, _ := b.Waiting(); n != 1 {
		t.Fatalf("Waiting = %d, want 1", n)
	}
	b.Release(20) // not enough for 30
	select {
	case err := <-got:
		t.Fatalf("Acquire(30) returned %v with 20 free", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(40)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if u := b.Used(); u != 70 {
		t.Fatalf("Used = %d, want 70", u)
	}
	stop := make(chan struct{})
	go func() { got <- b.Acquire(31, stop) }()
	<-waits
	close(stop)
	if err := <-got; err != ErrStopped {
		t.Fatalf("stopped Acquire: %v", err)
	}
	if u, p := b.Used(), b.Peak(); u != 70 || p != 100 {
		t.Fatalf("Used, Peak = %d, %d; want 70, 100", u, p)
	}
}

// TestBudgetAloneMayExceed: one acquisition larger than the whole budget
// passes when nothing else is held, so it can never wait forever.
func TestBudgetAloneMayExceed(t *testing.T) {
	b := NewBudget(100, nil)
	if !b.TryAcquire(500) {
		t.Fatal("a lone acquisition over the limit refused")
	}
	if b.TryAcquire(1) {
		t.Fatal("acquired past the limit")
	}
	b.Release(500)
}

// TestBudgetConcurrent: many goroutines acquiring and releasing never see
// the budget over its limit, and none is left waiting.
func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(1000, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				n := int64(1 + (i*7+j)%300)
				if err := b.Acquire(n, nil); err != nil {
					t.Error(err)
					return
				}
				if u := b.Used(); u > 1000 {
					t.Errorf("used %d over the limit", u)
				}
				b.Release(n)
			}
		}()
	}
	wg.Wait()
	if u, p := b.Used(), b.Peak(); u != 0 || p > 1000 {
		t.Fatalf("Used %d, Peak %d", u, p)
	}
}

// TestBufCharge: a charged Buf gives its capacity back on its last Release,
// and Grow moves the charge to the new Buf.
func TestBufCharge(t *testing.T) {
	b := NewBudget(1<<20, nil)
	if err := b.Acquire(int64(BufSize(1000)), nil); err != nil {
		t.Fatal(err)
	}
	buf := GetBuf(1000)
	buf.Charge(b)
	buf.B = append(buf.B, make([]byte, cap(buf.B))...)
	if err := b.Acquire(int64(buf.GrowSize(1)), nil); err != nil {
		t.Fatal(err)
	}
	buf = buf.Grow(1)
	if u := b.Used(); u != int64(cap(buf.B)) {
		t.Fatalf("after Grow: used %d, want the new capacity %d", u, cap(buf.B))
	}
	buf.Retain(1)
	buf.Release()
	if b.Used() == 0 {
		t.Fatal("given back while a holder remains")
	}
	buf.Release()
	if u := b.Used(); u != 0 {
		t.Fatalf("after the last Release: used %d", u)
	}
}

// TestRingCharge: a stream's ring is given back to the budget when the
// message has ended and every cursor is detached.
func TestRingCharge(t *testing.T) {
	b := NewBudget(1<<20, nil)
	pool := NewRingPool(64, b)
	if err := b.Acquire(int64(pool.Size()), nil); err != nil {
		t.Fatal(err)
	}
	st := NewStream(0, pool)
	c := st.Attach()
	st.Finish()
	if b.Used() != 64 {
		t.Fatalf("used %d while a cursor reads", b.Used())
	}
	c.Detach()
	if u := b.Used(); u != 0 {
		t.Fatalf("used %d after the stream ended", u)
	}
}
