package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// fanoutConfig is one fan-out or latency run: groups of members, one sender
// per group, every other member a receiver.
type fanoutConfig struct {
	groups, members int
	size            int
	warmup, measure time.Duration
	// window bounds, in closed-loop runs, how many messages a sender may be
	// ahead of the slowest receiver of its group.
	window int
	// rate, if set, makes the run open-loop: each sender sends this many
	// messages per second on a fixed schedule, whatever happens downstream.
	rate float64
	// profile, if set and the server has pprof on, is where a CPU profile
	// of the measured window goes.
	profile string
}

type fanoutResult struct {
	system     string
	size       int
	sent       int64 // messages sent in the measured window
	deliveries int64 // messages received in the measured window
	wall, cpu  time.Duration
	genCPU     time.Duration // this process's CPU in the window (the load generator)
	// Over the whole run (after the drain):
	sentTotal, receivedTotal, expectedTotal int64
	gaps                                    int64 // out-of-order or missing sequence numbers seen
	lat                                     []int64
	lag                                     []int64 // open loop: how late the generator sent, ns
}

func (r fanoutResult) perCPU() float64 {
	if r.cpu <= 0 {
		return 0
	}
	return float64(r.deliveries) / r.cpu.Seconds()
}

func (r fanoutResult) perSec() float64 { return float64(r.deliveries) / r.wall.Seconds() }

type fanGroup struct {
	recv    []*fanReceiver
	waiting atomic.Bool
	wake    chan struct{}
}

func (g *fanGroup) minCount() int64 {
	m := int64(-1)
	for _, r := range g.recv {
		if c := r.count.Load(); m < 0 || c < m {
			m = c
		}
	}
	return m
}

type fanReceiver struct {
	g     *fanGroup
	count atomic.Int64
	last  uint64
	gaps  atomic.Int64
	lat   []int64 // owned by the member's read goroutine until the run ends
}

// meter is the server side of a workload: one process, or the several
// processes of a cluster, whose CPU time is summed.
type meter interface {
	// cpu is the CPU time the server's processes have used so far.
	cpu() time.Duration
	// waitConnections waits until the server holds n client connections.
	waitConnections(n int, timeout time.Duration) error
}

// profiled is the process of srv whose CPU a fan-out profile records: the
// server, or a cluster's first node.
func profiled(srv meter) *server {
	switch s := srv.(type) {
	case *server:
		return s
	case *cluster:
		return s.nodes[0]
	}
	return nil
}

// runFanout runs cfg against sys (served by srv).
func runFanout(ctx context.Context, sysName string, sys system, srv meter, cfg fanoutConfig) (fanoutResult, error) {
	res := fanoutResult{system: sysName, size: cfg.size}
	var measuring atomic.Bool
	groups := make([]*fanGroup, cfg.groups)
	var members []member
	senders := make([]member, cfg.groups)
	defer func() {
		for _, m := range members {
			m.close()
		}
	}()
	for gi := range groups {
		g := &fanGroup{wake: make(chan struct{}, 1)}
		groups[gi] = g
		name := "g" + strconv.Itoa(gi)
		if ws, ok := sys.(wsproxySystem); ok {
			for range watchersPerGroup {
				w, err := ws.watch(ctx, name)
				if err != nil {
					return res, fmt.Errorf("watch %s: %w", name, err)
				}
				members = append(members, w)
			}
		}
		for mi := 1; mi < cfg.members; mi++ {
			r := &fanReceiver{g: g}
			g.recv = append(g.recv, r)
			m, err := sys.join(ctx, name, "m"+strconv.Itoa(mi), func(p []byte) {
				seq, sent, ok := readHeader(p)
				if !ok {
					r.gaps.Add(1)
					return
				}
				if seq != r.last+1 {
					r.gaps.Add(1)
				}
				r.last = seq
				if cfg.rate > 0 && measuring.Load() {
					r.lat = append(r.lat, time.Now().UnixNano()-sent)
				}
				r.count.Add(1)
				if g.waiting.Load() {
					select {
					case g.wake <- struct{}{}:
					default:
					}
				}
			})
			if err != nil {
				return res, fmt.Errorf("join %s: %w", name, err)
			}
			members = append(members, m)
		}
		m, err := sys.join(ctx, name, "m0", nil)
		if err != nil {
			return res, fmt.Errorf("join %s sender: %w", name, err)
		}
		members = append(members, m)
		senders[gi] = m
	}
	if err := srv.waitConnections(cfg.groups*cfg.members, 10*time.Second); err != nil {
		return res, err
	}

	var stop atomic.Bool
	var sentTotal atomic.Int64
	var wg sync.WaitGroup
	lags := make([][]int64, cfg.groups)
	errs := make(chan error, cfg.groups)
	for gi, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cfg.size)
			for i := headerLen; i < len(buf); i++ {
				buf[i] = byte(i)
			}
			var seq uint64
			var interval time.Duration
			var next time.Time
			if cfg.rate > 0 {
				interval = time.Duration(float64(time.Second) / cfg.rate)
				// Stagger the groups over one interval.
				next = time.Now().Add(time.Duration(gi) * interval / time.Duration(cfg.groups))
			}
			for !stop.Load() {
				if cfg.rate > 0 {
					now := time.Now()
					if d := next.Sub(now); d > 0 {
						time.Sleep(d)
						now = time.Now()
					}
					if measuring.Load() {
						lags[gi] = append(lags[gi], int64(now.Sub(next)))
					}
					next = next.Add(interval)
				} else {
					for int64(seq)-g.minCount() >= int64(cfg.window) && !stop.Load() {
						g.waiting.Store(true)
						if int64(seq)-g.minCount() < int64(cfg.window) {
							g.waiting.Store(false)
							break
						}
						select {
						case <-g.wake:
						case <-time.After(50 * time.Millisecond):
						}
						g.waiting.Store(false)
					}
					if stop.Load() {
						break
					}
				}
				seq++
				putHeader(buf, seq, time.Now().UnixNano())
				if err := senders[gi].send(buf); err != nil {
					errs <- fmt.Errorf("send: %w", err)
					return
				}
				sentTotal.Add(1)
			}
		}()
	}

	count := func() int64 {
		var n int64
		for _, g := range groups {
			for _, r := range g.recv {
				n += r.count.Load()
			}
		}
		return n
	}
	sleepCtx(ctx, cfg.warmup)
	d0, s0, c0, g0, t0 := count(), sentTotal.Load(), srv.cpu(), selfCPU(), time.Now()
	measuring.Store(true)
	var prof <-chan error
	if s := profiled(srv); s != nil && cfg.profile != "" && s.pprof != "" {
		prof = profileCPU(s, cfg.measure, cfg.profile)
	}
	sleepCtx(ctx, cfg.measure)
	measuring.Store(false)
	if prof != nil {
		if err := <-prof; err != nil {
			return res, fmt.Errorf("profile: %w", err)
		}
	}
	d1, s1, c1, g1, t1 := count(), sentTotal.Load(), srv.cpu(), selfCPU(), time.Now()
	stop.Store(true)
	for _, g := range groups {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}

	res.deliveries, res.sent, res.cpu, res.wall = d1-d0, s1-s0, c1-c0, t1.Sub(t0)
	res.genCPU = g1 - g0
	res.sentTotal = sentTotal.Load()
	res.expectedTotal = res.sentTotal * int64(cfg.members-1)
	// Let what is in flight arrive, to account for every message.
	deadline := time.Now().Add(10 * time.Second)
	for count() < res.expectedTotal && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	res.receivedTotal = count()
	for _, g := range groups {
		for _, r := range g.recv {
			res.gaps += r.gaps.Load()
		}
	}
	// The read goroutines are still running: stop them before taking their
	// samples.
	for _, m := range members {
		m.close()
	}
	members = nil
	for _, g := range groups {
		for _, r := range g.recv {
			res.lat = append(res.lat, r.lat...)
		}
	}
	for _, l := range lags {
		res.lag = append(res.lag, l...)
	}
	return res, nil
}

// runStreamBaseline sends closed-loop messages of size over n connections
// straight to a baseline sink (no relay): WebSocket messages to the ws sink,
// or one write per message on raw TCP to the tcp sink. Every message read by
// the sink counts as one delivery.
func runStreamBaseline(ctx context.Context, srv *server, n, size int, warmup, measure time.Duration) (fanoutResult, error) {
	res := fanoutResult{system: srv.name, size: size}
	var stop atomic.Bool
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	finals := make([]int64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			if srv.name == "tcp" {
				c, err := net.Dial("tcp", srv.addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				for !stop.Load() {
					if _, err := c.Write(buf); err != nil {
						errs <- err
						return
					}
					sent.Add(1)
				}
				_ = c.(*net.TCPConn).CloseWrite()
				var total int64
				if _, err := fmt.Fscan(c, &total); err != nil {
					errs <- err
					return
				}
				finals[i] = total / int64(size)
				return
			}
			c, _, err := websocket.Dial(ctx, "ws://"+srv.addr+"/", nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.CloseNow()
			for !stop.Load() {
				putHeader(buf, 0, time.Now().UnixNano())
				if err := c.Write(ctx, websocket.MessageBinary, buf); err != nil {
					errs <- err
					return
				}
				sent.Add(1)
			}
			msgs, _, err := sinkReport(ctx, c)
			if err != nil {
				errs <- err
				return
			}
			finals[i] = msgs
		}()
	}
	sleepCtx(ctx, warmup)
	s0, c0, t0 := sent.Load(), srv.cpu(), time.Now()
	sleepCtx(ctx, measure)
	s1, c1, t1 := sent.Load(), srv.cpu(), time.Now()
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}
	res.sent, res.deliveries, res.cpu, res.wall = s1-s0, s1-s0, c1-c0, t1.Sub(t0)
	res.sentTotal, res.expectedTotal = sent.Load(), sent.Load()
	for _, f := range finals {
		res.receivedTotal += f
	}
	return res, nil
}

// sinkReport asks the ws sink how much it has read on c.
func sinkReport(ctx context.Context, c *websocket.Conn) (msgs, bytes int64, err error) {
	if err := c.Write(ctx, websocket.MessageText, []byte("report")); err != nil {
		return 0, 0, err
	}
	_, p, err := c.Read(ctx)
	if err != nil {
		return 0, 0, err
	}
	_, err = fmt.Sscan(string(p), &msgs, &bytes)
	return msgs, bytes, err
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
