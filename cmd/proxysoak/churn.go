package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// slot is one (group, id): it holds at most one connection at a time, except
// for the moment a replacement is dialed.
type slot struct {
	group int
	id    string
	cur   atomic.Pointer[conn] // the connection the kicker aims at

	mu    sync.Mutex
	conns []*conn   // every connection of this slot, in dial order
	kicks []kickRec // every kick request for this (group, id)
}

type kickRec struct {
	sent, done time.Duration
	status     int // 0: the request failed
}

// soak is one run: the proxy, the slots, the connections and what was seen.
type soak struct {
	cfg    config
	target *target
	start  time.Time
	groups []string
	slots  []*slot
	pools  *pools

	outMu sync.Mutex // serializes output
	out   io.Writer
	failW io.Writer

	mu       sync.Mutex // guards the fields below
	conns    map[int64]*conn
	all      []*conn
	failures []failure
	printed  map[failKind]int

	nextNo   atomic.Int64
	live     atomic.Int64
	maxLive  atomic.Int64
	stopSend chan struct{} // closed when the churn is over: senders stop
	lastRecv atomic.Int64  // time of the last message received, since start

	sentMsgs, sentBytes                   atomic.Int64
	recvMsgs, recvBytes                   atomic.Int64
	verified, verifiedBytes               atomic.Int64
	midDrops, shortStalls, longStalls     atomic.Int64
	freezes, vanished                     atomic.Int64
	kicks, kickMisses, replacements       atomic.Int64
	blockedWrites, aimedKicks             atomic.Int64
	ownCloses, drops, dialFailures        atomic.Int64
	roles                                 [numRoles]atomic.Int64
	churnTime, drainTime, settleTime, end time.Duration

	// Written by the sampler goroutine until it stops; then by soak.
	baseline, peak, after   resources
	haveBaseline, haveAfter bool
	proxyCloses             map[string]float64
	proxyEvictions          map[string]float64
	proxyCPU                time.Duration

	// Filled by verify.
	checked, excused, unproven int64
}

func newSoak(cfg config, t *target, out, failW io.Writer) *soak {
	s := &soak{
		cfg: cfg, target: t, start: time.Now(), out: out, failW: failW,
		conns: map[int64]*conn{}, printed: map[failKind]int{},
		stopSend: make(chan struct{}),
	}
	names := []string{"soak-%d", "soak café/ü %d", "soak 日本 %d", "soak a+b&c=d?%d", "soak %d %%41"}
	for g := range cfg.groups {
		s.groups = append(s.groups, fmt.Sprintf(names[g%len(names)], g))
	}
	for i := range cfg.clients {
		g := i % cfg.groups
		s.slots = append(s.slots, &slot{group: g, id: fmt.Sprintf("m%d", i/cfg.groups)})
	}
	s.pools = newPools(rand.New(rand.NewPCG(cfg.seed, 0)), cfg.maxMsg+(1<<20))
	return s
}

func (s *soak) since() time.Duration { return time.Since(s.start) }

func (s *soak) logf(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.out, format+"\n", args...)
}

func (s *soak) register(c *conn) {
	s.mu.Lock()
	s.conns[c.no] = c
	s.all = append(s.all, c)
	s.mu.Unlock()
	c.sl.mu.Lock()
	c.sl.conns = append(c.sl.conns, c)
	c.sl.mu.Unlock()
	s.roles[c.role].Add(1)
	n := s.live.Add(1)
	for {
		m := s.maxLive.Load()
		if n <= m || s.maxLive.CompareAndSwap(m, n) {
			break
		}
	}
}

func (s *soak) opened() int64 {
	var n int64
	for i := range s.roles {
		n += s.roles[i].Load()
	}
	return n
}

func (s *soak) lookup(no int64) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[no]
}

// soak runs the whole sequence: warm-up and baseline, churn, drain, final
// closes, resource settling, verification.
func (s *soak) soak(ctx context.Context) {
	if err := s.warmup(); err != nil {
		s.fail(failProxy, "warm-up: %v", err)
		return
	}
	if r, err := sample(s.target, true); err != nil {
		s.fail(failProxy, "baseline: %v", err)
	} else {
		s.baseline, s.peak, s.haveBaseline = r, r, true
		s.logf("%s baseline after warm-up: %s", ts(s.since()), r)
	}

	churnStart := s.since()
	churnCtx, cancel := context.WithTimeout(ctx, s.cfg.duration)
	defer cancel()
	samplerCtx, stopSampler := context.WithCancel(context.Background())
	samplerDone := make(chan struct{})
	go s.sampler(samplerCtx, samplerDone, cancel)

	var wg sync.WaitGroup
	for i, sl := range s.slots {
		wg.Go(func() { s.runSlot(churnCtx, sl, rand.New(rand.NewPCG(s.cfg.seed, uint64(i)+1))) })
	}
	wg.Go(func() { s.kickLoop(churnCtx, rand.New(rand.NewPCG(s.cfg.seed, 1<<32))) })
	wg.Go(func() { s.progress(churnCtx) })
	<-churnCtx.Done()
	s.churnTime = s.since() - churnStart
	s.logf("%s churn over; stopping senders", ts(s.since()))
	close(s.stopSend)
	s.mu.Lock()
	for _, c := range s.all {
		c.fast.Store(true) // slow readers catch up
	}
	s.mu.Unlock()
	if !waitTimeout(&wg, 90*time.Second) {
		s.fail(failStuck, "slots still busy 90s after the end of the churn")
	}
	s.mu.Lock()
	all := append([]*conn(nil), s.all...)
	s.mu.Unlock()
	for _, c := range notDone(all, func(c *conn) chan struct{} { return c.sendDone }, sendTimeout+20*time.Second) {
		s.fail(failStuck, "%s: sender still busy %v after the end of the churn", c, sendTimeout+20*time.Second)
	}

	drainStart := s.since()
	if !s.target.exited() {
		s.drain()
	}
	s.drainTime = s.since() - drainStart
	s.finalClose(all)

	settleStart := s.since()
	if !s.target.exited() {
		s.waitNoConnections()
		s.settle()
	}
	s.settleTime = s.since() - settleStart
	stopSampler()
	<-samplerDone
	if ms, err := scrape(s.target); err == nil {
		s.proxyCloses = ms.byLabels("wsproxy_closes_total")
		s.proxyEvictions = ms.byLabels("wsproxy_evictions_total")
	}
	s.end = s.since()
	if pid := s.target.pid(); pid > 0 {
		s.proxyCPU, _ = cpuTime(pid)
	}
	s.verify(all)
	s.stopProxy()
}

// warmup opens two connections per group, has them exchange a message, and
// closes them, so the baseline is taken with pools and caches warm and no
// connection open.
func (s *soak) warmup() error {
	for g := range s.groups {
		a, _, err := s.dial(g, "warm-a", sockBufs{})
		if err != nil {
			return err
		}
		b, _, err := s.dial(g, "warm-b", sockBufs{})
		if err != nil {
			a.CloseNow()
			return err
		}
		time.Sleep(s.cfg.joinMargin) // b surely is a member by now
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = a.Write(ctx, websocket.MessageText, []byte("warm-up"))
		if err == nil {
			_, _, err = b.Read(ctx)
		}
		cancel()
		a.Close(websocket.StatusNormalClosure, "")
		b.Close(websocket.StatusNormalClosure, "")
		if err != nil {
			return fmt.Errorf("group %q: %w", s.groups[g], err)
		}
	}
	if err := s.waitConnections(10 * time.Second); err != nil {
		return err
	}
	time.Sleep(time.Second)
	return nil
}

// waitConnections waits until the proxy's wsproxy_connections gauge is 0.
func (s *soak) waitConnections(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last float64
	for {
		ms, err := scrape(s.target)
		if err == nil {
			v, ok := ms.value("wsproxy_connections")
			if !ok {
				return fmt.Errorf("/metrics has no wsproxy_connections")
			}
			if last = v; v == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wsproxy_connections is %v after %v, want 0 (last error: %v)", last, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sampler reads the proxy's resources every 2 s and keeps the maxima; if
// the proxy dies, it records a failure and ends the churn.
func (s *soak) sampler(ctx context.Context, done chan<- struct{}, endChurn func()) {
	defer close(done)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.target.exited() {
			s.fail(failProxy, "the proxy exited during the run: %v (log: %s)", s.target.waitErr, s.target.logPath)
			endChurn()
			return
		}
		if r, err := sample(s.target, false); err == nil {
			s.peak.max(r)
		}
	}
}

func (s *soak) progress(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		nf := len(s.failures)
		s.mu.Unlock()
		s.logf("%s live %d, opened %d, sent %d (%s), received %d, verified %d, kicks %d, failures %d",
			ts(s.since()), s.live.Load(), s.opened(), s.sentMsgs.Load(), sizeString(s.sentBytes.Load()),
			s.recvMsgs.Load(), s.verified.Load(), s.kicks.Load(), nf)
	}
}

// runSlot opens, runs and ends connections for one (group, id) until the
// churn is over, leaving the last one open for the final close.
func (s *soak) runSlot(ctx context.Context, sl *slot, rng *rand.Rand) {
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	if !pause(between(rng, 0, 2*time.Second)) {
		return
	}
	var c *conn
	for ctx.Err() == nil {
		if c == nil {
			if c = s.open(sl, rng); c == nil {
				if !pause(between(rng, 500*time.Millisecond, 2*time.Second)) {
					return
				}
				continue
			}
			sl.cur.Store(c)
		}
		t := time.NewTimer(connLife(rng))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.done: // kicked, dropped mid-message, vanished, or closed by the proxy
			t.Stop()
			c = nil
			if !pause(between(rng, 0, time.Second)) {
				return
			}
			continue
		case <-t.C:
		}
		if c.role == roleSlow {
			// Let it catch up first: what the proxy holds for a slow
			// reader may be older than the slack.
			c.fast.Store(true)
			if !pause(2 * time.Second) {
				return
			}
		}
		switch x := rng.Float64(); {
		case x < 0.65:
			code, reason := randomClose(rng)
			if c.closeWith(code, reason, false) {
				s.ownCloses.Add(1)
			}
			s.waitEnd(c, 25*time.Second, "after its own close")
			c = nil
		case x < 0.80:
			if c.drop() {
				s.drops.Add(1)
			}
			s.waitEnd(c, 25*time.Second, "after the soak cut its TCP connection")
			c = nil
		default:
			c.mu.Lock()
			c.replacing = true
			c.mu.Unlock()
			n := s.open(sl, rng)
			if n == nil {
				continue
			}
			s.replacements.Add(1)
			sl.cur.Store(n)
			s.waitEnd(c, 25*time.Second, "after its replacement connected")
			c = n
		}
		if c == nil && !pause(between(rng, 0, 500*time.Millisecond)) {
			return
		}
	}
}

// waitEnd waits for c to end; if it does not within d, that is a failure and
// c is dropped.
func (s *soak) waitEnd(c *conn, d time.Duration, what string) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	s.fail(failStuck, "%s: still open %v %s (reader ended: %v)", c, d, what, isClosed(c.readDone))
	c.drop()
	_ = c.ws.CloseNow()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// connLife draws how long a connection lives before its slot ends it.
func connLife(rng *rand.Rand) time.Duration {
	switch x := rng.Float64(); {
	case x < 0.3:
		return between(rng, time.Second, 5*time.Second)
	case x < 0.8:
		return between(rng, 5*time.Second, 30*time.Second)
	}
	return between(rng, 30*time.Second, 90*time.Second)
}

// randomClose draws a client close code and reason. It avoids the codes the
// proxy itself sends (1008, 1011, 4001-4005), so an echo is recognisable.
func randomClose(rng *rand.Rand) (websocket.StatusCode, string) {
	codes := []websocket.StatusCode{1000, 1000, 1000, 1001, 1003, 3000, 3999, 4000, 4100, 4999}
	reasons := []string{"", "bye", "au revoir — à bientôt", strings.Repeat("r", 123), "日本語"}
	return codes[rng.IntN(len(codes))], reasons[rng.IntN(len(reasons))]
}

// kickLoop kicks a random (group, id) through the admin API now and then.
func (s *soak) kickLoop(ctx context.Context, rng *rand.Rand) {
	for {
		t := time.NewTimer(time.Duration(min(rng.ExpFloat64(), 5) * float64(s.cfg.kickEvery)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		sl := s.slots[rng.IntN(len(s.slots))]
		if rng.IntN(2) == 0 {
			// Aim at a sender whose message has been going for a while
			// without a planned stall: the proxy is probably waiting for
			// a full receiver (backpressure).
			now := s.since()
			for _, i := range rng.Perm(len(s.slots)) {
				c := s.slots[i].cur.Load()
				if c != nil && c.sending.Load() && !c.stalling.Load() && now-time.Duration(c.sendStart.Load()) > 100*time.Millisecond {
					sl = s.slots[i]
					s.aimedKicks.Add(1)
					break
				}
			}
		}
		k := kickRec{sent: s.since()}
		status, err := s.kick(sl)
		k.done, k.status = s.since(), status
		sl.mu.Lock()
		sl.kicks = append(sl.kicks, k)
		sl.mu.Unlock()
		switch {
		case err != nil:
			s.fail(failKick, "kick group %q id %s at %s: %v", s.groups[sl.group], sl.id, ts(k.sent), err)
		case status == http.StatusNoContent:
			s.kicks.Add(1)
		case status == http.StatusNotFound:
			s.kickMisses.Add(1)
		default:
			s.fail(failKick, "kick group %q id %s at %s: HTTP %d, want 204 or 404", s.groups[sl.group], sl.id, ts(k.sent), status)
		}
	}
}

func (s *soak) kick(sl *slot) (int, error) {
	u := "http://" + s.target.addr + "/api/groups/" + url.PathEscape(s.groups[sl.group]) + "/members/" + url.PathEscape(sl.id)
	req, err := http.NewRequest(http.MethodDelete, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.token)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// drain waits, after the senders stopped, until no staller is frozen,
// nothing has arrived for 2 s and the proxy has nothing queued (at most
// 30 s), so that the final close interrupts no delivery: a receiver open
// until then must have every message.
func (s *soak) drain() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		quiet := s.since()-time.Duration(s.lastRecv.Load()) > 2*time.Second
		s.mu.Lock()
		for _, c := range s.all {
			if c.freezing.Load() && !isClosed(c.readDone) {
				quiet = false
				break
			}
		}
		s.mu.Unlock()
		if quiet {
			if r, err := sample(s.target, false); err == nil && r.queued == 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.logf("%s drain: still busy after 30s; closing anyway", ts(s.since()))
}

// finalClose closes every connection still open with 1000 and waits for all
// of them to end.
func (s *soak) finalClose(all []*conn) {
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() { c.closeWith(websocket.StatusNormalClosure, "soak over", true) })
	}
	if !waitTimeout(&wg, 30*time.Second) {
		s.fail(failStuck, "final close handshakes not done after 30s")
	}
	for _, c := range notDone(all, func(c *conn) chan struct{} { return c.done }, 30*time.Second) {
		s.fail(failStuck, "%s: not ended 30s after the final close", c)
		c.drop()
	}
}

// notDone waits at most d for every connection's channel ch(c) to be
// closed, and returns the connections whose channel is still open.
func notDone(all []*conn, ch func(*conn) chan struct{}, d time.Duration) []*conn {
	t := time.NewTimer(d)
	defer t.Stop()
	var late []*conn
	expired := false
	for _, c := range all {
		if !expired {
			select {
			case <-ch(c):
				continue
			case <-t.C:
				expired = true
			}
		}
		if !isClosed(ch(c)) {
			late = append(late, c)
		}
	}
	return late
}

func (s *soak) waitNoConnections() {
	if err := s.waitConnections(30 * time.Second); err != nil {
		s.fail(failResources, "after every client closed: %v", err)
	}
}

// Margins for "back near the idle baseline".
const (
	goroutineMargin = 10
	fdMargin        = 10
	heapMargin      = 16 << 20
	heapMarginNoGC  = 64 << 20 // when no GC can be forced (no pprof listener)
)

// settle polls (at most 30 s) until goroutines, fds and heap are back near
// the baseline; otherwise that is a failure.
func (s *soak) settle() {
	if !s.haveBaseline {
		return
	}
	b := s.baseline
	hm := int64(heapMargin)
	if s.target.pprof == "" {
		hm = heapMarginNoGC
	}
	deadline := time.Now().Add(30 * time.Second)
	var r resources
	var err error
	for {
		r, err = sample(s.target, true)
		if err == nil {
			s.after, s.haveAfter = r, true
			if r.goroutines <= b.goroutines+goroutineMargin && r.fds <= b.fds+fdMargin && r.heap <= b.heap+hm {
				return
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		s.fail(failResources, "after the run: %v", err)
		return
	}
	if r.goroutines > b.goroutines+goroutineMargin {
		s.fail(failResources, "goroutines %d after the run, baseline %d (allowed +%d)", r.goroutines, b.goroutines, goroutineMargin)
	}
	if r.fds > b.fds+fdMargin {
		s.fail(failResources, "open fds %d after the run, baseline %d (allowed +%d)", r.fds, b.fds, fdMargin)
	}
	if r.heap > b.heap+hm {
		s.fail(failResources, "heap in use %s after the run, baseline %s (allowed +%s)", sizeString(r.heap), sizeString(b.heap), sizeString(hm))
	}
}

// stopProxy stops a proxy this tool started and checks its exit and its log.
func (s *soak) stopProxy() {
	if s.target.cmd == nil {
		return
	}
	if err := s.target.stop(); err != nil {
		s.fail(failProxy, "proxy exit on SIGTERM: %v (log: %s)", err, s.target.logPath)
	}
	b, err := readFileLimited(s.target.logPath, 256<<20)
	if err != nil {
		return
	}
	var errLines []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "panic:") || strings.Contains(line, "WARNING: DATA RACE") || strings.HasPrefix(line, "fatal error:"):
			s.fail(failProxy, "proxy log: %s", line)
		case strings.Contains(line, `"level":"error"`):
			errLines = append(errLines, line)
		}
	}
	if len(errLines) > 0 {
		s.logf("proxy log has %d error lines; the first ones:", len(errLines))
		for _, l := range errLines[:min(5, len(errLines))] {
			s.logf("  %s", l)
		}
	}
}

func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
