package main

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// connsResult is one idle or handshake run.
type connsResult struct {
	system   string
	n        int
	wall     time.Duration // to open all n
	lat      []int64       // per handshake, ns: dial start to 101 (or accept)
	before   memStatus     // server memory before connecting
	after    memStatus     // with all n connected and settled
	failures int
	firstErr error
}

func (r connsResult) perConn() float64 {
	return float64(r.after.RSS-r.before.RSS) / float64(r.n)
}

func (r connsResult) rate() float64 { return float64(r.n) / r.wall.Seconds() }

// openConns opens n connections to srv with `workers` dialing in parallel,
// spread over several loopback source addresses, in groups of groupSize. For
// NATS with subscribe set, each connection also subscribes (CONNECT, SUB,
// PING/PONG) after its handshake, outside the timed latency. It returns the
// open connections.
func openConns(ctx context.Context, srv *server, n, workers, groupSize int, subscribe bool) ([]net.Conn, connsResult) {
	res := connsResult{system: srv.name, n: n, before: srv.mem()}
	conns := make([]net.Conn, n)
	lat := make([]int64, n)
	var next atomic.Int64
	var fails atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				laddr := sourceAddrs[(w+i)%len(sourceAddrs)]
				start := time.Now()
				var c net.Conn
				var err error
				switch srv.name {
				case "tcp":
					d := net.Dialer{LocalAddr: laddr, Timeout: 10 * time.Second}
					c, err = d.DialContext(ctx, "tcp", srv.addr)
				default:
					var rc *rawConn
					rc, err = rawDial(ctx, laddr, srv.addr, rawPath(srv.name, i, groupSize))
					if err == nil {
						c = rc
					}
				}
				lat[i] = int64(time.Since(start))
				if err == nil && srv.name == "nats" && subscribe {
					if err = c.(*rawConn).natsSubscribe(fmt.Sprintf("g%d", i/groupSize), 1); err != nil {
						c.Close()
					}
				}
				if err != nil {
					fails.Add(1)
					errOnce.Do(func() { res.firstErr = err })
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(t0)
	res.failures = int(fails.Load())
	res.lat = lat
	open := conns[:0]
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, res
}

func percentile(sorted []int64, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return time.Duration(sorted[i])
}

func sortInt64(a []int64) { sort.Slice(a, func(i, j int) bool { return a[i] < a[j] }) }
