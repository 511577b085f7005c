//go:build cluster

package cluster_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCluster starts the compose cluster once and runs every fault on it in
// turn; each case leaves the cluster whole again (its cleanup undoes the
// fault if the case stopped half-way) and ends by checking that new clients
// on the three proxies talk.
func TestCluster(t *testing.T) {
	start := time.Now()
	st := newStack(t)
	for _, c := range []struct {
		name string
		run  func(*testing.T, *stack)
	}{
		// The partition first, while the proxies' NATS connections are
		// cold: once the baseline's 8 MiB messages have grown their TCP
		// send buffers, a cut no longer blocks a write to NATS, and a
		// node stuck in one is the harder case.
		{"partition", testPartition},
		{"baseline", testBaseline},
		{"pause", testPause},
		{"nats-restart", testNATSRestart},
		{"graceful-stop", testGracefulStop},
		{"kill", testKill},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					for _, n := range st.nodes {
						t.Logf("%s cluster metrics after the failure:\n%s", n.service, n.clusterMetrics())
					}
				}
			})
			st.waitReady(t, time.Minute, st.nodes...)
			caseStart := time.Now()
			c.run(t, st)
			t.Logf("%s took %v", c.name, time.Since(caseStart).Round(time.Millisecond))
		})
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// testBaseline: members of one group on all three proxies send text and
// binary messages of every size class, up to 8 MiB; every receiver gets
// every message, in order, exactly, and nothing of its own.
func testBaseline(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	g := &group{name: "baseline"}
	senders := []*member{join(t, g, p1, "a1"), join(t, g, p2, "b2"), join(t, g, p3, "c3")}
	join(t, g, p1, "d1") // receives only: a1's messages reach it through its own node
	barrier(t, 30*time.Second, g)

	sizes := []struct {
		typ  websocket.MessageType
		size int
	}{
		{websocket.MessageText, 0},
		{websocket.MessageBinary, 0},
		{websocket.MessageText, 1},
		{websocket.MessageBinary, 100},
		{websocket.MessageText, 64 << 10},
		{websocket.MessageBinary, 128<<10 + 1}, // over one bus chunk (128 KiB by default)
		{websocket.MessageText, 1<<20 - 3},     // about --buffer-bytes and NATS's max_payload
		{websocket.MessageBinary, 1<<20 + 17},
		{websocket.MessageBinary, 8<<20 + 5}, // streamed, many chunks
		{websocket.MessageText, 8<<20 - 1},
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, m := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range sizes {
				if !m.send(s.typ, s.size) {
					return
				}
			}
		}()
	}
	wg.Wait()
	settle(2*time.Minute, g)
	t.Logf("%d messages of %d sizes from each of %d senders delivered in %v", len(sizes), len(sizes), len(senders), time.Since(start).Round(time.Millisecond))
	for _, m := range g.members {
		if got := m.sent.Load(); got != int64(len(sizes)) && m.id != "d1" {
			t.Errorf("%s sent %d messages of %d", m, got, len(sizes))
		}
		t.Log(judge(t, m, start, rule{mustOpen: true}))
	}
	closeAll(g)
}

// testPartition cuts proxy2 off the bus network while three groups talk:
// one on all three proxies, one on proxy1 and proxy3 only, one on proxy2
// only. proxy2 turns unready and refuses new clients; its member of the
// shared group gets 4004; members elsewhere are complete or get 4004; the
// group without proxy2 is untouched. Reconnecting heals proxy2.
func testPartition(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	all := &group{name: "part-all"}
	x1, x2, x3 := join(t, all, p1, "x1"), join(t, all, p2, "x2"), join(t, all, p3, "x3")
	g13 := &group{name: "part-13"}
	join(t, g13, p1, "y1")
	join(t, g13, p3, "y3")
	g2 := &group{name: "part-2"}
	join(t, g2, p2, "z2a")
	join(t, g2, p2, "z2b")
	gs := []*group{all, g13, g2}
	barrier(t, 30*time.Second, gs...)
	tr := startTraffic(25*time.Millisecond, 16<<10, membersOf(gs...)...)
	defer tr.halt()
	flowing(t, gs...)

	cut := time.Now()
	docker(t, time.Minute, "network", "disconnect", st.bus, p2.container)
	connected := false
	t.Cleanup(func() {
		if !connected {
			docker(t, time.Minute, "network", "connect", st.bus, p2.container)
		}
	})
	t.Logf("%s disconnected from %s", p2.container, st.bus)

	var code int
	eventually(t, 30*time.Second, func() bool { code = p2.readyz(); return code == http.StatusServiceUnavailable },
		func() string { return fmt.Sprintf("proxy2 cut off NATS: /readyz %d, want 503", code) })
	t.Logf("proxy2 /readyz 503 after %v", time.Since(cut).Round(time.Millisecond))
	if d := time.Since(cut); d > peerTimeout+5*time.Second {
		// Its peers knew after the peer timeout; it kept admitting
		// clients to a cluster it was not part of all that while.
		t.Errorf("proxy2 cut off NATS: /readyz turned 503 only after %v, want within the peer timeout %v and a 5s margin", d.Round(time.Millisecond), peerTimeout)
	}
	if s := dialStatus(p2, "late", all.name); s != http.StatusServiceUnavailable {
		t.Errorf("proxy2 cut off NATS: a new connection got %d, want 503", s)
	}
	if s := p1.readyz(); s != http.StatusOK {
		t.Errorf("proxy1 /readyz %d during proxy2's partition, want 200", s)
	}

	// Peers notice proxy2 is gone after the peer timeout; give them that
	// and a margin, then stop sending and let what is in flight arrive.
	waitFor(peerTimeout+15*time.Second, func() bool { return ended(x1, x2, x3) })
	tr.halt()
	settle(20*time.Second, gs...)
	for _, r := range []struct {
		m  *member
		ru rule
	}{
		{x2, rule{closes: []int{4004}, mustClose: true}},
		{x1, rule{closes: []int{4004}}},
		{x3, rule{closes: []int{4004}}},
	} {
		t.Log(judge(t, r.m, cut, r.ru))
	}
	for _, m := range g13.members {
		t.Log(judge(t, m, cut, rule{mustOpen: true}))
	}
	for _, m := range g2.members {
		t.Log(judge(t, m, cut, rule{closes: []int{4004}}))
	}

	heal := time.Now()
	docker(t, time.Minute, "network", "connect", st.bus, p2.container)
	connected = true
	eventually(t, time.Minute, func() bool { code = p2.readyz(); return code == http.StatusOK },
		func() string { return fmt.Sprintf("proxy2 back on the bus: /readyz %d, want 200", code) })
	t.Logf("proxy2 /readyz 200 %v after reconnecting", time.Since(heal).Round(time.Millisecond))

	// The heal must not touch the group without proxy2 either: give the
	// nodes two peer timeouts to settle their views, then it still talks.
	time.Sleep(2 * peerTimeout)
	healed := time.Now()
	for _, m := range g13.members {
		for i := range 5 {
			m.send(websocket.MessageBinary, 100+i)
		}
	}
	settle(20*time.Second, g13)
	for _, m := range g13.members {
		t.Log("after the heal: " + judge(t, m, heal, rule{mustOpen: true}))
	}
	t.Logf("(times since the reconnect; the last messages sent at %+.2fs)", healed.Sub(heal).Seconds())
	closeAll(gs...)
	talk(t, "part-healed", st.nodes...)
}

// testKill kills proxy3 (SIGKILL, no drain) while four groups talk: on all
// three proxies, on proxy1 and proxy3, on proxy1 and proxy2, and on proxy1
// only. proxy3's clients see their connections end without a close frame;
// the members of the groups shared with proxy3 get 4004 within the peer
// timeout and a margin, or are complete; the other groups are untouched.
func testKill(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	all := &group{name: "kill-all"}
	join(t, all, p1, "x1")
	join(t, all, p2, "x2")
	join(t, all, p3, "x3")
	g13 := &group{name: "kill-13"}
	join(t, g13, p1, "y1")
	join(t, g13, p3, "y3")
	g12 := &group{name: "kill-12"}
	join(t, g12, p1, "v1")
	join(t, g12, p2, "v2")
	g1 := &group{name: "kill-1"}
	join(t, g1, p1, "w1a")
	join(t, g1, p1, "w1b")
	gs := []*group{all, g13, g12, g1}
	barrier(t, 30*time.Second, gs...)
	tr := startTraffic(25*time.Millisecond, 16<<10, membersOf(gs...)...)
	defer tr.halt()
	flowing(t, gs...)

	killed := time.Now()
	docker(t, time.Minute, "kill", p3.container)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			docker(t, time.Minute, "start", p3.container)
			st.waitHealthy(t, p3.container, time.Minute)
			st.lookUpPort(t, p3)
		}
	})
	var onP3, shared []*member
	for _, m := range membersOf(all, g13) {
		if m.node == p3 {
			onP3 = append(onP3, m)
		} else {
			shared = append(shared, m)
		}
	}
	waitFor(20*time.Second, func() bool { return ended(onP3...) })
	waitFor(peerTimeout+15*time.Second, func() bool { return ended(shared...) })
	tr.halt()
	settle(20*time.Second, gs...)
	for _, m := range onP3 {
		t.Log(judge(t, m, killed, rule{closes: []int{int(websocket.StatusAbnormalClosure)}, mustClose: true}))
	}
	for _, m := range shared {
		t.Log(judge(t, m, killed, rule{closes: []int{4004}}))
		closedInTime(t, m, killed, peerTimeout+5*time.Second)
	}
	for _, m := range membersOf(g12, g1) {
		t.Log(judge(t, m, killed, rule{mustOpen: true}))
	}
	closeAll(gs...)

	// proxy3 comes back (on a new host port) and joins the cluster again.
	docker(t, time.Minute, "start", p3.container)
	restarted = true
	st.waitHealthy(t, p3.container, time.Minute)
	st.lookUpPort(t, p3)
	st.waitReady(t, time.Minute, p3)
	t.Logf("proxy3 ready again %v after the kill, on %s", time.Since(killed).Round(time.Millisecond), p3.addr)
	talk(t, "kill-after", st.nodes...)
}

// testGracefulStop stops proxy3 as docker-compose does (SIGTERM, a drain)
// while two groups talk: one on all three proxies, one on proxy1 and proxy2.
// proxy3's clients get 1001 and it exits 0; nobody elsewhere gets 4004: the
// members on proxy1 and proxy2 stay open with every message relayed.
func testGracefulStop(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	all := &group{name: "stop-all"}
	join(t, all, p1, "x1")
	join(t, all, p2, "x2")
	x3 := join(t, all, p3, "x3")
	g12 := &group{name: "stop-12"}
	join(t, g12, p1, "v1")
	join(t, g12, p2, "v2")
	gs := []*group{all, g12}
	barrier(t, 30*time.Second, gs...)
	tr := startTraffic(25*time.Millisecond, 16<<10, membersOf(gs...)...)
	defer tr.halt()
	flowing(t, gs...)

	stopped := time.Now()
	docker(t, time.Minute, "stop", "--time", "20", p3.container)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			docker(t, time.Minute, "start", p3.container)
			st.waitHealthy(t, p3.container, time.Minute)
			st.lookUpPort(t, p3)
		}
	})
	took := time.Since(stopped)
	if state := strings.TrimSpace(docker(t, 30*time.Second, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", p3.container)); state != "exited 0" {
		t.Errorf("proxy3 after docker stop: %q, want \"exited 0\"", state)
	}
	t.Logf("docker stop of proxy3 took %v", took.Round(time.Millisecond))
	waitFor(20*time.Second, func() bool { return ended(x3) })
	// proxy3 says goodbye after closing its clients. Wait long enough for
	// a peer to have declared it lost, had it mistaken the goodbye for a
	// loss: the peer timeout and a margin (a "never" needs a fixed wait).
	time.Sleep(time.Until(x3.state().endAt.Add(peerTimeout + 3*time.Second)))
	tr.halt()
	settle(20*time.Second, gs...)
	t.Log(judge(t, x3, stopped, rule{closes: []int{int(websocket.StatusGoingAway)}, mustClose: true}))
	for _, m := range membersOf(gs...) {
		if m != x3 {
			t.Log(judge(t, m, stopped, rule{mustOpen: true}))
		}
	}
	closeAll(gs...)

	docker(t, time.Minute, "start", p3.container)
	restarted = true
	st.waitHealthy(t, p3.container, time.Minute)
	st.lookUpPort(t, p3)
	st.waitReady(t, time.Minute, p3)
	talk(t, "stop-after", st.nodes...)
}

// testPause freezes proxy2 (docker pause) for longer than the peer timeout
// while three groups talk, as testPartition's. Its peers close the members
// of the shared group with 4004; once resumed, proxy2 closes its own member
// of that group with 4004 (or 1008); the group without proxy2 is untouched.
func testPause(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	all := &group{name: "pause-all"}
	x1, x2, x3 := join(t, all, p1, "x1"), join(t, all, p2, "x2"), join(t, all, p3, "x3")
	g13 := &group{name: "pause-13"}
	join(t, g13, p1, "y1")
	join(t, g13, p3, "y3")
	g2 := &group{name: "pause-2"}
	join(t, g2, p2, "z2a")
	join(t, g2, p2, "z2b")
	gs := []*group{all, g13, g2}
	barrier(t, 30*time.Second, gs...)
	tr := startTraffic(50*time.Millisecond, 8<<10, membersOf(gs...)...)
	defer tr.halt()
	flowing(t, gs...)

	paused := time.Now()
	docker(t, time.Minute, "pause", p2.container)
	unpaused := false
	t.Cleanup(func() {
		if !unpaused {
			docker(t, time.Minute, "unpause", p2.container)
		}
	})
	// Paused for at least the peer timeout and a second, and until the
	// peers have closed their members of the shared group.
	waitFor(peerTimeout+15*time.Second, func() bool { return ended(x1, x3) })
	if rest := time.Until(paused.Add(peerTimeout + time.Second)); rest > 0 {
		time.Sleep(rest)
	}
	docker(t, time.Minute, "unpause", p2.container)
	unpaused = true
	resumed := time.Now()
	t.Logf("proxy2 paused for %v", resumed.Sub(paused).Round(time.Millisecond))

	waitFor(20*time.Second, func() bool { return ended(x2) })
	var code int
	eventually(t, time.Minute, func() bool { code = p2.readyz(); return code == http.StatusOK },
		func() string { return fmt.Sprintf("proxy2 resumed: /readyz %d, want 200", code) })
	t.Logf("proxy2 /readyz 200 %v after resuming", time.Since(resumed).Round(time.Millisecond))
	tr.halt()
	settle(20*time.Second, gs...)
	t.Logf("times below are since the pause; proxy2 resumed at %+.2fs", resumed.Sub(paused).Seconds())
	t.Log(judge(t, x1, paused, rule{closes: []int{4004}, mustClose: true}))
	t.Log(judge(t, x3, paused, rule{closes: []int{4004}, mustClose: true}))
	t.Log(judge(t, x2, paused, rule{closes: []int{4004, 1008}, mustClose: true}))
	for _, m := range g13.members {
		t.Log(judge(t, m, paused, rule{mustOpen: true}))
	}
	for _, m := range g2.members {
		t.Log(judge(t, m, paused, rule{closes: []int{4004, 1008}}))
	}
	closeAll(gs...)
	talk(t, "pause-after", st.nodes...)
}

// testNATSRestart restarts the NATS container while two groups talk: one on
// all three proxies, one on proxy1 only. Every proxy turns unready while
// NATS is gone and ready again after; members of the spanning group are
// complete or get 4004, never a gap; new clients then talk across proxies.
func testNATSRestart(t *testing.T, st *stack) {
	p1, p2, p3 := st.nodes[0], st.nodes[1], st.nodes[2]
	all := &group{name: "nats-all"}
	join(t, all, p1, "x1")
	join(t, all, p2, "x2")
	join(t, all, p3, "x3")
	g1 := &group{name: "nats-1"}
	join(t, g1, p1, "w1a")
	join(t, g1, p1, "w1b")
	gs := []*group{all, g1}
	barrier(t, 30*time.Second, gs...)
	tr := startTraffic(25*time.Millisecond, 16<<10, membersOf(gs...)...)
	defer tr.halt()
	flowing(t, gs...)

	// Watch every /readyz from before the restart: the outage may be short.
	watches := make([]*readyWatch, len(st.nodes))
	for i, n := range st.nodes {
		watches[i] = watchReady(n)
	}
	restart := time.Now()
	docker(t, 2*time.Minute, "restart", "--time", "10", st.nats)
	t.Logf("docker restart of %s took %v", st.nats, time.Since(restart).Round(time.Millisecond))
	st.waitHealthy(t, st.nats, time.Minute)
	var pending string
	eventually(t, 90*time.Second, func() bool {
		pending = ""
		for i, w := range watches {
			if !w.recovered() {
				pending += " " + st.nodes[i].service
			}
		}
		return pending == ""
	}, func() string { return "after the NATS restart, /readyz has not gone 503 then 200 on" + pending })
	for i, w := range watches {
		w.stop()
		t.Logf("%s /readyz: 503 from %+.2fs to %+.2fs", st.nodes[i].service, w.down.Sub(restart).Seconds(), w.up.Sub(restart).Seconds())
	}
	tr.halt()
	settle(20*time.Second, gs...)
	for _, m := range all.members {
		t.Log(judge(t, m, restart, rule{closes: []int{4004}}))
	}
	for _, m := range g1.members {
		t.Log(judge(t, m, restart, rule{closes: []int{4004}}))
	}
	closeAll(gs...)
	talk(t, "nats-after", st.nodes...)
}

// talk checks that new clients, one on each given node, exchange messages:
// the cluster works after a fault.
func talk(t *testing.T, name string, nodes ...*node) {
	t.Helper()
	g := &group{name: name}
	for i, n := range nodes {
		join(t, g, n, fmt.Sprintf("%s-%d", name, i+1))
	}
	barrier(t, 30*time.Second, g)
	start := time.Now()
	var wg sync.WaitGroup
	for _, m := range g.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				typ := websocket.MessageText
				if i%2 == 1 {
					typ = websocket.MessageBinary
				}
				if !m.send(typ, 1+i*7919) {
					return
				}
			}
		}()
	}
	wg.Wait()
	settle(30*time.Second, g)
	var lines []string
	for _, m := range g.members {
		lines = append(lines, judge(t, m, start, rule{mustOpen: true}))
	}
	t.Logf("new clients on %d nodes talk: %s", len(nodes), strings.Join(lines, "; "))
	closeAll(g)
}

func membersOf(gs ...*group) []*member {
	var ms []*member
	for _, g := range gs {
		ms = append(ms, g.members...)
	}
	return ms
}

// flowing waits until every member has received data from every other
// member of its group: the traffic crosses the cluster before the fault.
func flowing(t *testing.T, gs ...*group) {
	t.Helper()
	var lacking string
	eventually(t, 30*time.Second, func() bool {
		lacking = ""
		for _, g := range gs {
			for _, r := range g.members {
				st := r.state()
				for _, s := range g.members {
					if s != r && st.got[s.id] < 5 {
						lacking += fmt.Sprintf(" %s<-%s", r, s)
					}
				}
			}
		}
		return lacking == ""
	}, func() string { return "traffic not flowing: fewer than 5 messages at" + lacking })
}

func ended(ms ...*member) bool {
	for _, m := range ms {
		if !m.state().ended {
			return false
		}
	}
	return true
}

// waitFor polls cond every 50 ms for up to timeout and reports whether it
// came true; what it means if not is for the judge to say.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// closedInTime fails the test if m was closed with 4004 later than limit
// after since.
func closedInTime(t *testing.T, m *member, since time.Time, limit time.Duration) {
	t.Helper()
	if st := m.state(); st.ended && st.code == 4004 && st.endAt.Sub(since) > limit {
		t.Errorf("%s: 4004 %v after the fault, want within %v (peer timeout %v and a margin)", m, st.endAt.Sub(since).Round(time.Millisecond), limit, peerTimeout)
	}
}

// readyWatch polls a node's /readyz every 25 ms and records the first 503
// and the first 200 after it.
type readyWatch struct {
	mu       sync.Mutex
	down, up time.Time
	done     chan struct{}
	wg       sync.WaitGroup
}

func watchReady(n *node) *readyWatch {
	w := &readyWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			code := n.readyz()
			now := time.Now()
			w.mu.Lock()
			switch {
			case code == http.StatusServiceUnavailable && w.down.IsZero():
				w.down = now
			case code == http.StatusOK && !w.down.IsZero() && w.up.IsZero():
				w.up = now
			}
			w.mu.Unlock()
			select {
			case <-w.done:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *readyWatch) recovered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.up.IsZero()
}

func (w *readyWatch) stop() {
	close(w.done)
	w.wg.Wait()
}
