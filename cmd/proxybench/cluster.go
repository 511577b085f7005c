package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The cluster workloads run wsproxy as a cluster (SPEC section 12): one
// nats-server with JetStream on a memory store, and clusterNodes proxies, each
// its own process with --nats-url pointing at it, its own --node-name and the
// same --cluster-name. Each is judged next to the same workload on one proxy.

const (
	clusterNodes = 3
	clusterName  = "proxybench"
	// clusterReady bounds how long the nodes may take to hear from each
	// other once each is ready.
	clusterReady = 10 * time.Second
)

// cluster is a running wsproxy cluster under test. Its methods are called
// from one goroutine.
type cluster struct {
	nats  *server
	nodes []*server

	// snaps are the per-process CPU times (procs order) of every cpu()
	// call, so that a window's sum can be broken down by process.
	snaps [][]time.Duration
}

// startCluster starts the bus and n nodes, each ready (/readyz 200) before
// the next starts, and waits until every node hears from every other. On error nothing is left running, and the error carries
// the end of the failing process's log.
func startCluster(b *binaries, logDir string, n int) (*cluster, error) {
	bus, err := startNATSBus(b, logDir)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	c := &cluster{nats: bus}
	for i := range n {
		name := "n" + strconv.Itoa(i+1)
		srv, err := startNamedProxy(b, logDir, "wsproxy-"+name,
			"--nats-url", "nats://"+bus.addr, "--cluster-name", clusterName, "--node-name", name)
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("node %s: %w%s", name, err, logTail(filepath.Join(logDir, "wsproxy-"+name+".log"), 6))
		}
		srv.name = name
		c.nodes = append(c.nodes, srv)
	}
	if err := c.waitPeers(); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// logTail is the last n lines of the log at path, indented, for an error
// message ("" if there are none).
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	lines = lines[max(0, len(lines)-n):]
	var s strings.Builder
	s.WriteString("\n  last lines of " + path + ":")
	for _, l := range lines {
		if len(l) > 400 {
			l = l[:400] + "..."
		}
		s.WriteString("\n    " + l)
	}
	return s.String()
}

// stop ends the nodes (in parallel), then the bus.
func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.stop() }()
	}
	wg.Wait()
	c.nats.stop()
}

// procs are the cluster's processes: the nodes, then NATS.
func (c *cluster) procs() []*server { return append(append([]*server(nil), c.nodes...), c.nats) }

func procName(s *server) string {
	if s.name == "nats-bus" {
		return "nats"
	}
	return s.name
}

// cpu is the CPU time of every process of the cluster, NATS included.
func (c *cluster) cpu() time.Duration {
	var sum time.Duration
	var snap []time.Duration
	for _, p := range c.procs() {
		d := p.cpu()
		snap = append(snap, d)
		sum += d
	}
	c.snaps = append(c.snaps, snap)
	return sum
}

// cpuBreakdown is the CPU time of each process between the last two cpu()
// calls, e.g. "n1 0.41, n2 0.38, n3 0.37, nats 0.20".
func (c *cluster) cpuBreakdown() string {
	if len(c.snaps) < 2 {
		return "-"
	}
	a, b := c.snaps[len(c.snaps)-2], c.snaps[len(c.snaps)-1]
	var parts []string
	for i, p := range c.procs() {
		parts = append(parts, fmt.Sprintf("%s %.2f", procName(p), (b[i]-a[i]).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// mem is the memory status of each process, procs order.
func (c *cluster) mem() []memStatus {
	var m []memStatus
	for _, p := range c.procs() {
		m = append(m, p.mem())
	}
	return m
}

// waitConnections waits until the nodes together hold n connections (each
// node's wsproxy_connections counts its own clients).
func (c *cluster) waitConnections(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var got float64
		var err error
		for _, node := range c.nodes {
			v, e := proxyMetric(node, "wsproxy_connections")
			got += v
			err = errors.Join(err, e)
		}
		if err == nil && int(got) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: nodes hold %v connections after %v, want %d (err %v)", got, timeout, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPeers waits until every node hears from every other
// (wsproxy_bus_peers), failing after clusterReady.
func (c *cluster) waitPeers() error {
	deadline := time.Now().Add(clusterReady)
	for {
		var seen []string
		formed := true
		for _, node := range c.nodes {
			v, err := proxyMetric(node, "wsproxy_bus_peers")
			if err != nil || int(v) != len(c.nodes)-1 {
				formed = false
			}
			seen = append(seen, fmt.Sprintf("%s: %v peers (err %v)", node.name, v, err))
		}
		if formed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not formed after %v, want %d peers each: %s", clusterReady, len(c.nodes)-1, strings.Join(seen, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clusterSystem connects the members of the fan-out workloads to the nodes of
// a cluster, spread by placement.
type clusterSystem struct {
	c       *cluster
	sendCtx context.Context // bounds every send: a stuck node cannot hang the run
	ends    *endLog
}

func (s clusterSystem) join(ctx context.Context, group, id string, onMsg func([]byte)) (member, error) {
	node := s.c.nodes[placement(group, id, len(s.c.nodes))]
	return joinWS(ctx, wsproxyURL(node.addr, group, id), onMsg, s.sendCtx, s.ends.record)
}

// placement is the node of member id of group: (group number + member
// number) mod nodes, the numbers being the names' trailing digits (0 if
// none). The fan-out's members m0..m9 of g<k> land 4/3/3 over three nodes,
// and the senders (m0) of successive groups on successive nodes.
func placement(group, id string, nodes int) int {
	return (trailingNumber(group) + trailingNumber(id)) % nodes
}

func trailingNumber(s string) int {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return n
}

// endLog counts members whose connection ended other than by their own
// close (e.g. 4004 missed messages), by close status.
type endLog struct {
	mu     sync.Mutex
	n      int
	byCode map[string]int
}

func (l *endLog) record(err error) {
	why := err.Error()
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		why = strconv.Itoa(int(ce.Code))
		if ce.Reason != "" {
			why += " " + ce.Reason
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byCode == nil {
		l.byCode = map[string]int{}
	}
	l.n++
	l.byCode[why]++
}

func (l *endLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return "0"
	}
	var parts []string
	for why, k := range l.byCode {
		parts = append(parts, fmt.Sprintf("%d x %q", k, why))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", l.n, strings.Join(parts, ", "))
}

func (l *endLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (b *bench) clusterFanout(out *strings.Builder) error {
	p := b.p
	fmt.Fprintf(out, "\n## Cluster fan-out (closed loop)\n\nThe fan-out workload (%d groups x %d members, one sender per group, "+
		"window %d, %v after %v of warm-up) on one proxy, then with each group's members spread over %d proxy nodes "+
		"sharing one nats-server (JetStream, memory store): member m<i> of group g<k> on node (i + k) mod %d, so every "+
		"group has members on every node and the senders take turns by node. Server CPU is that of every server process: "+
		"the one proxy, or the %d nodes and NATS. Ended early: members whose connection the server closed during the run. NATS messages per client message: "+
		"the bus server's in_msgs and out_msgs (/varz, whole run: data chunks, credits, heartbeats, registry) over the messages "+
		"the senders sent.\n\n",
		fanGroups, fanMembers, fanWindow, p.fanMeasure, p.fanWarmup, clusterNodes, clusterNodes, clusterNodes)
	fmt.Fprintf(out, "| size | setup | deliveries/s (wall) | server CPU s | CPU s by process | deliveries per server CPU-s | vs one node | received / expected | gaps | ended early | NATS msgs in / out per client message | NATS slow consumers |\n")
	fmt.Fprintf(out, "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, size := range fanSizes {
		cfg := fanoutConfig{groups: fanGroups, members: fanMembers, size: size,
			warmup: p.fanWarmup, measure: p.fanMeasure, window: fanWindow}

		logf(b.log, "cluster fan-out: one node, %d B", size)
		srv, err := startProxy(b.bins, b.bins.dir)
		if err != nil {
			return err
		}
		one, err := runFanout(b.ctx, "wsproxy", wsproxySystem{srv.addr}, srv, cfg)
		srv.stop()
		if err != nil {
			return fmt.Errorf("one node: %w", err)
		}
		fmt.Fprintf(out, "| %s | one node | %s | %.2f | - | %s | 1.00x | %d / %d | %d | - | - | - |\n", sizeName(int64(size)),
			count(one.perSec()), one.cpu.Seconds(), count(one.perCPU()), one.receivedTotal, one.expectedTotal, one.gaps)

		logf(b.log, "cluster fan-out: %d nodes, %d B", clusterNodes, size)
		c, err := startCluster(b.bins, b.bins.dir, clusterNodes)
		if err != nil {
			return err
		}
		sendCtx, cancel := context.WithTimeout(b.ctx, p.fanWarmup+p.fanMeasure+time.Minute)
		ends := &endLog{}
		cfg.profile = b.profilePath(fmt.Sprintf("cluster-fanout-n1-%d.pprof", size))
		r, err := runFanout(b.ctx, "cluster", clusterSystem{c: c, sendCtx: sendCtx, ends: ends}, c, cfg)
		cancel()
		slow, _ := natsVarz(c.nats, "slow_consumers")
		natsIn, _ := natsVarz(c.nats, "in_msgs")
		natsOut, _ := natsVarz(c.nats, "out_msgs")
		breakdown := c.cpuBreakdown()
		c.stop()
		if err != nil {
			return fmt.Errorf("%d nodes: %w (members ended early: %s)", clusterNodes, err, ends)
		}
		fmt.Fprintf(out, "| %s | %d nodes + NATS | %s | %.2f | %s | %s | %s | %d / %d | %d | %s | %.2f / %.2f | %.0f |\n", sizeName(int64(size)),
			clusterNodes, count(r.perSec()), r.cpu.Seconds(), breakdown, count(r.perCPU()), ratio(r.perCPU(), one.perCPU()),
			r.receivedTotal, r.expectedTotal, r.gaps, ends, natsIn/float64(max(1, r.sentTotal)), natsOut/float64(max(1, r.sentTotal)), slow)
		ok := r.perCPU() >= 0.5*one.perCPU() && r.gaps == 0 && r.receivedTotal == r.expectedTotal && ends.count() == 0
		b.judge("cluster fan-out "+sizeName(int64(size)), "deliveries per CPU-s of all server processes >= 0.5 x one node; none lost", ok,
			"%s vs %s (%s); %d / %d received, %d gaps, %s ended early", count(r.perCPU()), count(one.perCPU()),
			ratio(r.perCPU(), one.perCPU()), r.receivedTotal, r.expectedTotal, r.gaps, ends)
	}
	return nil
}

func (b *bench) clusterBlob(out *strings.Builder) error {
	p := b.p
	fmt.Fprintf(out, "\n## Cluster large messages\n\nOne binary message (one frame) from member m0 to the two other members "+
		"of its group: on one proxy, then with m0 on node n1 and the receivers on n2 and n3 of a fresh %d-node cluster "+
		"(default --bus-chunk-bytes and --bus-window-bytes; NATS max_payload 1 MiB). End to end: message size / time from "+
		"the first write to the last receiver holding (and having checked) every byte. Peak RSS is each process's "+
		"VmHWM after the message; every process is fresh for each message.\n\n", clusterNodes)
	fmt.Fprintf(out, "| message | setup | end to end | vs one node | server CPU s | CPU s by process | RSS before | peak RSS (VmHWM) |\n| --- | --- | ---: | ---: | ---: | --- | --- | --- |\n")
	hwms := map[string][]int64{} // process -> VmHWM per message size
	var names []string
	var blob []byte
	for _, size := range p.clusterBlobSizes {
		if int64(len(blob)) < size {
			blob = nil
			blob = newBlob(size)
		}
		msg := blob[:size]
		desc := sizeName(size) + " 1->2"

		logf(b.log, "cluster blob: one node, %s", desc)
		one, err := runBlobProxy(b.ctx, b.bins, b.bins.dir, msg, 2, 0)
		if err != nil {
			return fmt.Errorf("one node %s: %w", desc, err)
		}
		oneRate := float64(size) / one.wall.Seconds()
		fmt.Fprintf(out, "| %s | one node | %s/s | 1.00x | %.2f | - | %s | %s |\n", desc, mib(int64(oneRate)), one.cpu.Seconds(),
			mib(one.before.RSS), mib(one.after.HWM))

		logf(b.log, "cluster blob: %d nodes, %s", clusterNodes, desc)
		c, err := startCluster(b.bins, b.bins.dir, clusterNodes)
		if err != nil {
			return err
		}
		wall, cpu, before, after, err := clusterBlobRun(b.ctx, c, msg)
		breakdown := c.cpuBreakdown()
		c.stop()
		if err != nil {
			return fmt.Errorf("%d nodes %s: %w", clusterNodes, desc, err)
		}
		rate := float64(size) / wall.Seconds()
		var rssBefore, rssPeak []string
		names = names[:0]
		var worst int64
		for i, proc := range c.procs() {
			name := procName(proc)
			names = append(names, name)
			rssBefore = append(rssBefore, fmt.Sprintf("%s %s", name, mib(before[i].RSS)))
			rssPeak = append(rssPeak, fmt.Sprintf("%s %s", name, mib(after[i].HWM)))
			hwms[name] = append(hwms[name], after[i].HWM)
			worst = max(worst, after[i].HWM)
		}
		fmt.Fprintf(out, "| %s | n1 -> n2, n3 | %s/s | %s | %.2f | %s | %s | %s |\n", desc, mib(int64(rate)), ratio(rate, oneRate),
			cpu.Seconds(), breakdown, strings.Join(rssBefore, ", "), strings.Join(rssPeak, ", "))
		b.judge("cluster blob "+desc, "across nodes >= 0.5 x one node's rate", rate >= 0.5*oneRate,
			"%s/s vs %s/s (%s); largest VmHWM %s", mib(int64(rate)), mib(int64(oneRate)), ratio(rate, oneRate), mib(worst))
	}
	flat := true
	var figs []string
	for _, name := range names {
		h := hwms[name]
		lo, hi := h[0], h[0]
		for _, v := range h {
			lo, hi = min(lo, v), max(hi, v)
		}
		if float64(hi-lo) > 0.25*float64(lo) {
			flat = false
		}
		figs = append(figs, fmt.Sprintf("%s %s to %s", name, mib(lo), mib(hi)))
	}
	sizes := p.clusterBlobSizes
	b.judge("cluster blob", "every process's peak RSS flat in message size (within 25 %)", flat, "VmHWM %s over %s to %s messages",
		strings.Join(figs, ", "), sizeName(sizes[0]), sizeName(sizes[len(sizes)-1]))
	return nil
}

// clusterBlobRun sends msg from a member on the first node to one on each of
// the others, all in one group, within a deadline that allows 10 MiB/s.
func clusterBlobRun(ctx context.Context, c *cluster, msg []byte) (wall, cpu time.Duration, before, after []memStatus, err error) {
	time.Sleep(200 * time.Millisecond)
	before = c.mem()
	urls := make([]string, len(c.nodes))
	for i, node := range c.nodes {
		urls[i] = wsproxyURL(node.addr, "blob", "m"+strconv.Itoa(i))
	}
	limit := time.Minute + time.Duration(len(msg)/(10<<20))*time.Second
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	wall, cpu, err = relayBlob(ctx, c, urls, msg, 0)
	after = c.mem()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("not delivered within %v: %w", limit, err)
	}
	return wall, cpu, before, after, err
}
