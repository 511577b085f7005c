package limits

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// clock is a manual time source for an Admission.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestAdmission(t *testing.T, o AdmitOptions) (*Admission, *clock) {
	t.Helper()
	a := NewAdmission(o)
	if a == nil {
		t.Fatal("NewAdmission returned nil with a limit on")
	}
	c := newClock()
	a.now = c.now
	return a, c
}

func req(remote string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.RemoteAddr = remote
	return r
}

func mustAdmit(t *testing.T, a *Admission, r *http.Request) *Ticket {
	t.Helper()
	tk, ref := a.Admit(r)
	if ref != nil {
		t.Fatalf("refused %+v, want admitted", *ref)
	}
	return tk
}

func mustRefuse(t *testing.T, a *Admission, r *http.Request, status int, reason string) *Refusal {
	t.Helper()
	tk, ref := a.Admit(r)
	if ref == nil {
		tk.Release()
		t.Fatalf("admitted, want %d %s", status, reason)
	}
	if ref.Status != status || ref.Reason != reason {
		t.Fatalf("refused %d %s, want %d %s", ref.Status, ref.Reason, status, reason)
	}
	if ref.Msg == "" || ref.RetryAfter <= 0 {
		t.Fatalf("refusal %+v lacks a message or a Retry-After", *ref)
	}
	return ref
}

func TestNilAdmissionAdmitsAll(t *testing.T) {
	a := NewAdmission(AdmitOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if a != nil {
		t.Fatal("NewAdmission with every limit off is not nil")
	}
	for range 3 {
		tk, ref := a.Admit(req("1.2.3.4:5"))
		if ref != nil {
			t.Fatalf("nil admission refused: %+v", *ref)
		}
		tk.Release()
		tk.Release()
		_ = tk.IP()
	}
	if a.Open() != 0 || a.Tracked() != 0 {
		t.Fatal("nil admission counts")
	}
}

func TestMaxConnections(t *testing.T) {
	a, _ := newTestAdmission(t, AdmitOptions{MaxConnections: 3})
	var tks []*Ticket
	for i := range 3 {
		tks = append(tks, mustAdmit(t, a, req(fmt.Sprintf("10.0.0.%d:1", i))))
	}
	ref := mustRefuse(t, a, req("10.0.0.9:1"), 503, ReasonMaxConnections)
	if ref.RetryAfterSeconds() != 5 {
		t.Errorf("Retry-After %d s, want 5", ref.RetryAfterSeconds())
	}
	if a.Open() != 3 {
		t.Errorf("Open = %d, want 3", a.Open())
	}
	tks[0].Release()
	tks[0].Release() // idempotent: must not free a second slot
	if a.Open() != 2 {
		t.Errorf("Open after release = %d, want 2", a.Open())
	}
	tks = append(tks, mustAdmit(t, a, req("10.0.0.9:1")))
	mustRefuse(t, a, req("10.0.0.10:1"), 503, ReasonMaxConnections)
	if a.Tracked() != 0 {
		t.Errorf("without a per-address limit %d addresses tracked", a.Tracked())
	}
	for _, tk := range tks {
		tk.Release()
	}
	if a.Open() != 0 {
		t.Errorf("Open after all released = %d", a.Open())
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	a, _ := newTestAdmission(t, AdmitOptions{MaxConnectionsPerIP: 2})
	t1 := mustAdmit(t, a, req("10.0.0.1:1"))
	t2 := mustAdmit(t, a, req("10.0.0.1:2"))
	if t1.IP() != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("ticket IP %v", t1.IP())
	}
	ref := mustRefuse(t, a, req("10.0.0.1:3"), 429, ReasonIPConnections)
	if ref.RetryAfterSeconds() < 1 {
		t.Errorf("Retry-After %d", ref.RetryAfterSeconds())
	}
	// Another address is not affected.
	t3 := mustAdmit(t, a, req("10.0.0.2:1"))
	// IPv4-mapped is the same address.
	mustRefuse(t, a, req("[::ffff:10.0.0.1]:4"), 429, ReasonIPConnections)
	t1.Release()
	t4 := mustAdmit(t, a, req("10.0.0.1:5"))
	t2.Release()
	t3.Release()
	t4.Release()
	if a.Tracked() != 0 {
		t.Errorf("%d addresses tracked after every connection ended", a.Tracked())
	}
}

// IPv6 addresses count per /64.
func TestPerIPv6Prefix(t *testing.T) {
	a, _ := newTestAdmission(t, AdmitOptions{MaxConnectionsPerIP: 1})
	tk := mustAdmit(t, a, req("[2001:db8:1:2::1]:1"))
	mustRefuse(t, a, req("[2001:db8:1:2:ffff::9]:1"), 429, ReasonIPConnections)
	mustAdmit(t, a, req("[2001:db8:1:3::1]:1")).Release()
	tk.Release()
}

func TestConnectRatePerIP(t *testing.T) {
	a, c := newTestAdmission(t, AdmitOptions{ConnectRatePerIP: 2, ConnectBurstPerIP: 3})
	for range 3 {
		mustAdmit(t, a, req("10.0.0.1:1")).Release()
	}
	ref := mustRefuse(t, a, req("10.0.0.1:1"), 429, ReasonIPRate)
	// One token comes back every 0.5 s.
	if ref.RetryAfter <= 0 || ref.RetryAfter > 500*time.Millisecond {
		t.Errorf("RetryAfter %v, want (0, 500ms]", ref.RetryAfter)
	}
	if ref.RetryAfterSeconds() != 1 {
		t.Errorf("Retry-After header %d s, want 1", ref.RetryAfterSeconds())
	}
	// Refused attempts take no token: many of them do not push the wait out.
	for range 20 {
		mustRefuse(t, a, req("10.0.0.1:1"), 429, ReasonIPRate)
	}
	mustAdmit(t, a, req("10.0.0.2:1")).Release() // another address has its own bucket
	c.add(500 * time.Millisecond)
	mustAdmit(t, a, req("10.0.0.1:1")).Release()
	mustRefuse(t, a, req("10.0.0.1:1"), 429, ReasonIPRate)
}

func TestConnectRateRetryAfterLong(t *testing.T) {
	a, _ := newTestAdmission(t, AdmitOptions{ConnectRatePerIP: 0.1}) // burst 1
	mustAdmit(t, a, req("10.0.0.1:1")).Release()
	ref := mustRefuse(t, a, req("10.0.0.1:1"), 429, ReasonIPRate)
	if got := ref.RetryAfterSeconds(); got != 10 {
		t.Errorf("Retry-After %d s, want 10 (one token every 10 s)", got)
	}
}

// An address with open connections is never forgotten; one with none and a
// full bucket is.
func TestIdleEviction(t *testing.T) {
	a, c := newTestAdmission(t, AdmitOptions{ConnectRatePerIP: 1, ConnectBurstPerIP: 2, MaxConnectionsPerIP: 5})
	keep := mustAdmit(t, a, req("10.0.0.1:1"))
	mustAdmit(t, a, req("10.0.0.2:1")).Release()
	if a.Tracked() != 2 {
		t.Fatalf("Tracked = %d, want 2", a.Tracked())
	}
	c.add(time.Hour)
	mustAdmit(t, a, req("10.0.0.3:1")).Release() // sweeps
	if got := a.Tracked(); got != 2 {            // 10.0.0.1 (open) and 10.0.0.3 (fresh)
		t.Fatalf("Tracked after sweep = %d, want 2", got)
	}
	keep.Release()
	if got := a.Tracked(); got != 1 { // 10.0.0.1's bucket is full again: dropped at once
		t.Fatalf("Tracked after release = %d, want 1", got)
	}
}

// The table never holds more than MaxTrackedAddrs; a new address meeting a
// table of busy ones is refused, and admitted again once entries go idle.
func TestTableBounded(t *testing.T) {
	const maxAddrs = 100
	a, c := newTestAdmission(t, AdmitOptions{ConnectRatePerIP: 1, ConnectBurstPerIP: 1, MaxTrackedAddrs: maxAddrs})
	for i := range 1000 {
		tk, ref := a.Admit(req(fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)))
		if i < maxAddrs {
			if ref != nil {
				t.Fatalf("address %d refused: %+v", i, *ref)
			}
			tk.Release()
		} else if ref == nil || ref.Reason != ReasonIPTableFull || ref.Status != 429 {
			t.Fatalf("address %d: %+v, want 429 %s", i, ref, ReasonIPTableFull)
		}
		if n := a.Tracked(); n > maxAddrs {
			t.Fatalf("table holds %d > %d", n, maxAddrs)
		}
	}
	// Their buckets refill within a second: the next full-table sweep
	// frees them.
	c.add(2 * time.Second)
	mustAdmit(t, a, req("10.200.0.1:1")).Release()
	if n := a.Tracked(); n != 1 {
		t.Errorf("after the sweep %d tracked, want 1", n)
	}
}

func TestAdmitConcurrent(t *testing.T) {
	a := NewAdmission(AdmitOptions{MaxConnections: 50, MaxConnectionsPerIP: 7})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				tk, ref := a.Admit(req(fmt.Sprintf("10.0.%d.%d:1", g, i%10)))
				if ref == nil {
					tk.Release()
					tk.Release()
				}
			}
		}()
	}
	wg.Wait()
	if a.Open() != 0 || a.Tracked() != 0 {
		t.Fatalf("Open %d, Tracked %d after every ticket released", a.Open(), a.Tracked())
	}
}

func TestMaxConnectionsFor(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want int
	}{
		{0, 32}, {64, 32}, {128, 64}, {512, 448}, {1024, 922}, {20000, 18000}, {65536, 58983},
		{200000, 100000}, {1 << 20, 100000}, {^uint64(0), 100000},
	} {
		if got := maxConnectionsFor(c.n); got != c.want {
			t.Errorf("maxConnectionsFor(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	if d := DefaultMaxConnections(); d < minDefaultConnections || d > maxDefaultConnections {
		t.Errorf("DefaultMaxConnections() = %d", d)
	}
}

func TestLogLimiter(t *testing.T) {
	l := NewLogLimiter(time.Second)
	c := newClock()
	l.now = c.now
	if ok, n := l.Allow("a"); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("allowed within the interval")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key is limited by the first")
	}
	c.add(time.Second)
	if ok, n := l.Allow("a"); !ok || n != 5 {
		t.Fatalf("after the interval: %v, suppressed %d, want true 5", ok, n)
	}
}

// BenchmarkAdmit is one admission and its release with every limit on, from
// 1000 addresses, on every core at once (one mutex for all).
func BenchmarkAdmit(b *testing.B) {
	a := NewAdmission(AdmitOptions{MaxConnections: 1 << 20, MaxConnectionsPerIP: 1 << 10, ConnectRatePerIP: 1e9,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	reqs := make([]*http.Request, 1000)
	for i := range reqs {
		reqs[i] = req(fmt.Sprintf("192.0.%d.%d:1", i/256, i%256))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tk, ref := a.Admit(reqs[i%len(reqs)])
			if ref != nil {
				b.Fatal(ref.Reason)
			}
			tk.Release()
			i++
		}
	})
}
