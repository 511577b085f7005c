package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The hostile workload replays issue 9's memory scenarios against the proxy
// with the memory budget off (--memory-limit=0: what the proxy did before)
// and on, and reports the proxy's peak RSS and what a group not involved
// got done meanwhile.
//
//   - frozen: groups each of one sender writing 64 KiB messages as fast as
//     it can and one receiver that never reads its socket (half of them read
//     one frame every 0.5 s instead, about 2 KiB/s at first);
//   - unfinished: connections each holding an unfinished message of about
//     1 MiB and trickling one byte every half second.
//
// A "bystander" group of two does round trips of 1 KiB messages all along;
// its rate before the scenario starts is its baseline.

type hostileResult struct {
	scenario, limit string
	baseRSS, hwm    int64
	before, during  float64 // bystander round trips per second
	evicted         float64 // closes for memory (receivers and senders)
	budgetUsed      float64 // the budget's use at the end, bytes
}

func (b *bench) hostile(out *strings.Builder) error {
	p := b.p
	const limit = "256MiB" // a budget of 128 MiB for messages
	fmt.Fprintf(out, "\n## Hostile clients and the memory budget\n\nIssue 9's scenarios, each against a fresh proxy, "+
		"with the memory budget off (`--memory-limit=0`, what the proxy did before it existed) and on "+
		"(`--memory-limit=%s`: a budget of half that for messages). **frozen**: %d groups, each one sender "+
		"writing 64 KiB messages as fast as it can and one receiver that reads nothing (every other one reads "+
		"a frame every 0.5 s). **unfinished**: %d connections, each sending a 1 MiB - 4 KiB frame of a message "+
		"that never ends, then a byte every 0.5 s. Meanwhile a bystander group of two does round trips of "+
		"1 KiB messages; its rate in the %v before the scenario is the baseline. Each scenario runs %v.\n\n",
		limit, p.hostileGroups, p.hostileHolders, time.Second, p.hostileDur)
	fmt.Fprintf(out, "| scenario | --memory-limit | RSS before | peak RSS (VmHWM) | closed for memory | bystander round trips/s before | during |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, sc := range []string{"frozen", "unfinished"} {
		for _, lim := range []string{"0", limit} {
			srv, err := startProxy(b.bins, b.bins.dir, "--memory-limit="+lim, "--write-timeout=1m")
			if err != nil {
				return err
			}
			logf(b.log, "hostile %s, --memory-limit=%s", sc, lim)
			r, err := runHostile(b.ctx, srv, sc, lim, p)
			srv.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", sc, err)
			}
			fmt.Fprintf(out, "| %s | %s | %s | %s | %.0f | %.0f | %.0f |\n", r.scenario, r.limit, mib(r.baseRSS), mib(r.hwm),
				r.evicted, r.before, r.during)
			if lim != "0" {
				budget := int64(128 << 20)
				ok := r.hwm-r.baseRSS <= budget+64<<20 && r.during > 0
				b.judge("hostile "+sc, "peak RSS growth within the budget + 64 MiB; bystanders keep going", ok,
					"RSS %s -> %s (budget %s); bystander %.0f round trips/s (%.0f before)",
					mib(r.baseRSS), mib(r.hwm), mib(budget), r.during, r.before)
			}
		}
	}
	return nil
}

func runHostile(ctx context.Context, srv *server, scenario, limit string, p params) (hostileResult, error) {
	res := hostileResult{scenario: scenario, limit: limit}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sys := wsproxySystem{srv.addr}

	// The bystanders.
	got := make(chan struct{}, 1)
	a, err := sys.join(ctx, "bystanders", "a", nil)
	if err != nil {
		return res, err
	}
	defer a.close()
	bm, err := sys.join(ctx, "bystanders", "b", func([]byte) { got <- struct{}{} })
	if err != nil {
		return res, err
	}
	defer bm.close()
	time.Sleep(100 * time.Millisecond)
	var trips atomic.Int64
	go func() {
		msg := make([]byte, 1<<10)
		for ctx.Err() == nil {
			if a.send(msg) != nil {
				return
			}
			select {
			case <-got:
				trips.Add(1)
			case <-time.After(30 * time.Second):
				return // counted as nothing done
			case <-ctx.Done():
				return
			}
		}
	}()
	res.baseRSS = srv.mem().RSS
	t0 := trips.Load()
	time.Sleep(time.Second)
	res.before = float64(trips.Load() - t0)

	var wg sync.WaitGroup
	var conns []*rawConn
	var mu sync.Mutex
	keep := func(c *rawConn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	switch scenario {
	case "frozen":
		for i := range p.hostileGroups {
			g := "frozen-" + strconv.Itoa(i)
			r, err := rawDial(ctx, nil, srv.addr, "/ws?id=r&groupName="+g)
			if err != nil {
				return res, err
			}
			keep(r)
			s, err := rawDial(ctx, nil, srv.addr, "/ws?id=s&groupName="+g)
			if err != nil {
				return res, err
			}
			keep(s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := make([]byte, 64<<10)
				for ctx.Err() == nil {
					if s.writeFrame(2, msg) != nil {
						return
					}
				}
			}()
			if i%2 == 1 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						if _, _, err := r.readFrame(); err != nil {
							return
						}
						time.Sleep(500 * time.Millisecond)
					}
				}()
			}
		}
	case "unfinished":
		first := make([]byte, 1<<20-4<<10)
		for i := range p.hostileHolders {
			g := "unfinished-" + strconv.Itoa(i%50)
			s, err := rawDial(ctx, nil, srv.addr, "/ws?id=s"+strconv.Itoa(i)+"&groupName="+g)
			if err != nil {
				return res, err
			}
			keep(s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.writeRaw(false, 2, first) != nil {
					return
				}
				for ctx.Err() == nil {
					if s.writeRaw(false, 0, []byte{1}) != nil {
						return
					}
					select {
					case <-time.After(500 * time.Millisecond):
					case <-ctx.Done():
					}
				}
			}()
		}
	}
	t1 := trips.Load()
	start := time.Now()
	time.Sleep(p.hostileDur)
	res.during = float64(trips.Load()-t1) / time.Since(start).Seconds()
	res.hwm = srv.mem().HWM
	ev, _ := proxyMetric(srv, "wsproxy_evictions_total")
	qf, _ := proxyMetric(srv, `wsproxy_evictions_total{reason="queue_full"}`)
	wt, _ := proxyMetric(srv, `wsproxy_evictions_total{reason="write_timeout"}`)
	res.evicted = ev - qf - wt
	res.budgetUsed, _ = proxyMetric(srv, "wsproxy_memory_used_bytes")
	return res, nil
}

// writeRaw writes one masked frame, final or not (opcode 0: continuation).
func (c *rawConn) writeRaw(fin bool, opcode byte, p []byte) error {
	h := opcode
	if fin {
		h |= 0x80
	}
	hdr := make([]byte, 0, 14+len(p))
	hdr = append(hdr, h)
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	hdr = append(hdr, 0, 0, 0, 0) // a zero mask: the payload goes as it is
	hdr = append(hdr, p...)
	_, err := c.Write(hdr)
	return err
}
