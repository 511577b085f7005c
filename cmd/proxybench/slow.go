package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// slowResult is one slow-consumer run: one group, one sender at a fixed
// rate, `receivers` members of which the last never reads its socket.
type slowResult struct {
	system    string
	receivers int
	rate      float64 // messages per second sent
	size      int
	dur       time.Duration
	sent      int64
	// Over the healthy receivers:
	minShare  float64 // lowest received/sent of any one of them, whole run
	minWindow float64 // lowest received/sent in any whole one-second window
	gaps      int64
	evicted   float64 // slow-consumer closes the server counted
	before    memStatus
	after     memStatus
}

const slowWindow = time.Second

func runSlow(ctx context.Context, sysName string, sys system, srv *server, receivers, size int, rate float64, dur time.Duration) (slowResult, error) {
	res := slowResult{system: sysName, receivers: receivers, rate: rate, size: size, dur: dur}
	time.Sleep(200 * time.Millisecond)
	res.before = srv.mem()
	const group = "slow"
	windows := int(dur/slowWindow) + 2
	type recv struct {
		count   atomic.Int64
		last    uint64
		gaps    atomic.Int64
		buckets []atomic.Int64 // messages received per window of arrival time
	}
	start := time.Now().Add(500 * time.Millisecond) // senders start here
	var members []member
	defer func() {
		for _, m := range members {
			m.close()
		}
	}()
	healthy := make([]*recv, receivers-1)
	for i := range healthy {
		r := &recv{buckets: make([]atomic.Int64, windows)}
		healthy[i] = r
		m, err := sys.join(ctx, group, "r"+strconv.Itoa(i), func(p []byte) {
			seq, _, ok := readHeader(p)
			if !ok || seq != r.last+1 {
				r.gaps.Add(1)
			}
			r.last = seq
			r.count.Add(1)
			if w := int(time.Since(start) / slowWindow); w >= 0 && w < windows {
				r.buckets[w].Add(1)
			}
		})
		if err != nil {
			return res, err
		}
		members = append(members, m)
	}
	// The stalled receiver: a raw connection that is never read.
	path := "/ws?id=stalled&groupName=" + group
	if sysName != "wsproxy" {
		path = "/"
	}
	stalled, err := rawDial(ctx, nil, srv.addr, path)
	if err != nil {
		return res, err
	}
	defer stalled.Close()
	if sysName == "nats" {
		if err := stalled.natsSubscribe(group, 1); err != nil {
			return res, err
		}
	}
	sender, err := sys.join(ctx, group, "sender", nil)
	if err != nil {
		return res, err
	}
	members = append(members, sender)
	if err := waitConnections(srv, receivers+1, 10*time.Second); err != nil {
		return res, err
	}

	// Open loop: send on schedule whatever happens downstream.
	buf := make([]byte, size)
	interval := time.Duration(float64(time.Second) / rate)
	next := start
	end := start.Add(dur)
	var seq uint64
	sentPerWindow := make([]int64, windows)
	for next.Before(end) {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		seq++
		now := time.Now()
		putHeader(buf, seq, now.UnixNano())
		if err := sender.send(buf); err != nil {
			return res, fmt.Errorf("send: %w", err)
		}
		if w := int(now.Sub(start) / slowWindow); w >= 0 && w < windows {
			sentPerWindow[w]++
		}
		next = next.Add(interval)
	}
	res.sent = int64(seq)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, r := range healthy {
			if r.count.Load() < res.sent {
				done = false
			}
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.after = srv.mem()
	res.minShare, res.minWindow = 1, 1
	full := int(dur / slowWindow) // whole windows only
	for _, r := range healthy {
		res.gaps += r.gaps.Load()
		res.minShare = min(res.minShare, float64(r.count.Load())/float64(res.sent))
		for w := 0; w < full; w++ {
			if sentPerWindow[w] > 0 {
				res.minWindow = min(res.minWindow, float64(r.buckets[w].Load())/float64(sentPerWindow[w]))
			}
		}
	}
	switch sysName {
	case "wsproxy":
		res.evicted, _ = proxyMetric(srv, "wsproxy_evictions_total")
	case "nats":
		res.evicted, _ = natsVarz(srv, "slow_consumers")
	}
	return res, nil
}

var _ net.Conn = (*rawConn)(nil)
