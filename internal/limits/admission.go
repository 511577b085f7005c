// Package limits decides, before the WebSocket upgrade, whether a connection
// may be admitted at all (SPEC section 10): a process-wide connection limit
// (503), a per-address concurrent limit and a per-address connect rate (429),
// each answered with Retry-After. It costs one mutex and no goroutine per
// request, and its per-address state is bounded.
package limits

import (
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Refusal is a connection refused before the upgrade.
type Refusal struct {
	Status     int           // HTTP status: 503 or 429
	Msg        string        // constant text for the JSON body
	Reason     string        // metrics label, one of Reasons
	RetryAfter time.Duration // how long the client should wait; at least a second
}

// RetryAfterSeconds is RetryAfter in whole seconds for the Retry-After
// header, rounded up, at least 1.
func (r *Refusal) RetryAfterSeconds() int {
	s := int(math.Ceil(r.RetryAfter.Seconds()))
	if s < 1 {
		return 1
	}
	return s
}

// The reasons of a Refusal.
const (
	ReasonMaxConnections = "max_connections" // --max-connections
	ReasonIPConnections  = "ip_connections"  // --max-connections-per-ip
	ReasonIPRate         = "ip_rate"         // --connect-rate-per-ip
	ReasonIPTableFull    = "ip_table_full"   // too many addresses tracked at once
)

// Reasons is every Refusal reason.
var Reasons = []string{ReasonMaxConnections, ReasonIPConnections, ReasonIPRate, ReasonIPTableFull}

// retryWhenFull is the Retry-After of a refusal that lasts until some other
// connection ends, which nobody can predict: long enough that a flood of
// retries does not become the load.
const retryWhenFull = 5 * time.Second

// DefaultMaxTrackedAddrs is the default bound of the per-address table.
const DefaultMaxTrackedAddrs = 65536

// AdmitOptions are the admission limits. 0 turns each off.
type AdmitOptions struct {
	MaxConnections      int     // open connections, process-wide
	MaxConnectionsPerIP int     // open connections per client address
	ConnectRatePerIP    float64 // new connections per second per client address
	ConnectBurstPerIP   int     // connections an address may open at once; 0: the rate rounded up, at least 1
	// TrustedProxies may set X-Forwarded-For (see ClientIP).
	TrustedProxies []netip.Prefix
	// MaxTrackedAddrs bounds the per-address table; 0: DefaultMaxTrackedAddrs.
	MaxTrackedAddrs int
}

// On reports whether any limit is on.
func (o AdmitOptions) On() bool {
	return o.MaxConnections > 0 || o.perIP()
}

func (o AdmitOptions) perIP() bool {
	return o.MaxConnectionsPerIP > 0 || o.ConnectRatePerIP > 0
}

// Admission admits connections under AdmitOptions. Its methods are safe for
// concurrent use. A nil *Admission admits everything (every limit off).
type Admission struct {
	// Static after construction.
	opts     AdmitOptions
	burst    int
	maxAddrs int
	now      func() time.Time // time.Now; tests move it

	// Guarded by mu.
	mu            sync.Mutex
	open          int
	addrs         map[netip.Addr]*addrState // only with a per-address limit
	nextSweep     time.Time
	nextFullSweep time.Time
}

// addrState is one client address's share (keyed by addrKey).
type addrState struct {
	open int
	lim  *rate.Limiter // nil without --connect-rate-per-ip
}

// sweepEvery is how often Admit drops the table's idle entries;
// fullSweepEvery how often it may try again while the table is full.
const (
	sweepEvery     = 10 * time.Second
	fullSweepEvery = time.Second
)

// NewAdmission returns an Admission, or nil if every limit in o is off.
func NewAdmission(o AdmitOptions) *Admission {
	if !o.On() {
		return nil
	}
	a := &Admission{opts: o, burst: o.ConnectBurstPerIP, maxAddrs: o.MaxTrackedAddrs, now: time.Now}
	if a.burst <= 0 {
		a.burst = max(1, int(math.Ceil(o.ConnectRatePerIP)))
	}
	if a.maxAddrs <= 0 {
		a.maxAddrs = DefaultMaxTrackedAddrs
	}
	if o.perIP() {
		a.addrs = make(map[netip.Addr]*addrState)
	}
	return a
}

// Ticket is an admitted connection's slot. Release it exactly once when the
// connection ends (further calls do nothing). A nil *Ticket, which a nil
// Admission hands out, is valid: its IP is the zero Addr and Release does
// nothing.
type Ticket struct {
	a        *Admission
	ip       netip.Addr
	key      netip.Addr
	released atomic.Bool
}

// IP is the client's address (ClientIP of the request).
func (t *Ticket) IP() netip.Addr {
	if t == nil {
		return netip.Addr{}
	}
	return t.ip
}

// Release frees the ticket's slots.
func (t *Ticket) Release() {
	if t == nil {
		return
	}
	if t.released.CompareAndSwap(false, true) {
		t.a.release(t.key)
	}
}

// Admit admits r or says why not. On success the caller owns the Ticket and
// must Release it when the connection ends.
//
// Checks, in order: the process-wide limit (503, no per-address state
// touched), the address's open connections (429), its connect rate (429;
// a refused attempt takes no token), and the table's bound (429): an address
// not yet tracked while the table holds MaxTrackedAddrs addresses that all
// have open connections or recent connects is refused rather than let in
// untracked or made to share a bucket with strangers.
func (a *Admission) Admit(r *http.Request) (*Ticket, *Refusal) {
	if a == nil {
		return nil, nil
	}
	ip := ClientIP(r, a.opts.TrustedProxies)
	key := addrKey(ip)
	now := a.now()

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.opts.MaxConnections > 0 && a.open >= a.opts.MaxConnections {
		return nil, &Refusal{http.StatusServiceUnavailable, "too many connections; retry later",
			ReasonMaxConnections, retryWhenFull}
	}
	if a.addrs != nil {
		if !now.Before(a.nextSweep) {
			a.sweep(now)
		}
		st := a.addrs[key]
		if st == nil {
			if len(a.addrs) >= a.maxAddrs && !now.Before(a.nextFullSweep) {
				a.sweep(now)
				a.nextFullSweep = now.Add(fullSweepEvery)
			}
			if len(a.addrs) >= a.maxAddrs {
				return nil, &Refusal{http.StatusTooManyRequests, "too many client addresses at once; retry later",
					ReasonIPTableFull, retryWhenFull}
			}
			st = &addrState{}
			if a.opts.ConnectRatePerIP > 0 {
				st.lim = rate.NewLimiter(rate.Limit(a.opts.ConnectRatePerIP), a.burst)
			}
			a.addrs[key] = st
		}
		if a.opts.MaxConnectionsPerIP > 0 && st.open >= a.opts.MaxConnectionsPerIP {
			return nil, &Refusal{http.StatusTooManyRequests, "too many connections from this address",
				ReasonIPConnections, retryWhenFull}
		}
		if st.lim != nil {
			res := st.lim.ReserveN(now, 1)
			if d := res.DelayFrom(now); d > 0 {
				res.CancelAt(now)
				return nil, &Refusal{http.StatusTooManyRequests, "connecting too often from this address; retry later",
					ReasonIPRate, d}
			}
		}
		st.open++
	}
	a.open++
	return &Ticket{a: a, ip: ip, key: key}, nil
}

func (a *Admission) release(key netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open--
	if a.addrs == nil {
		return
	}
	if st := a.addrs[key]; st != nil {
		st.open--
		if a.idle(st, a.now()) {
			delete(a.addrs, key)
		}
	}
}

// idle reports whether st can be forgotten: no open connection, and a
// limiter that is full again (forgetting it changes nothing).
func (a *Admission) idle(st *addrState, now time.Time) bool {
	return st.open <= 0 && (st.lim == nil || st.lim.TokensAt(now) >= float64(a.burst))
}

// sweep drops every idle entry. a.mu is held. It walks the whole table,
// which Admit does at most once per sweepEvery, and once per fullSweepEvery
// while the table is full: a flood of new addresses against a table of busy
// ones costs one walk a second, not one per request.
func (a *Admission) sweep(now time.Time) {
	for k, st := range a.addrs {
		if a.idle(st, now) {
			delete(a.addrs, k)
		}
	}
	a.nextSweep = now.Add(sweepEvery)
}

// Open is the number of admitted connections not yet released.
func (a *Admission) Open() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.open
}

// Tracked is the number of addresses in the per-address table.
func (a *Admission) Tracked() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.addrs)
}

// addrKey is the key of ip's per-address state: the address itself for
// IPv4, its /64 for IPv6 (one host is routinely given a whole /64, so
// counting single IPv6 addresses would limit nothing).
func addrKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}
