package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/faultproxy"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/natstest"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// Test timings: short enough for the loss cases, long enough that a loaded
// 2-core machine never misses a heartbeat by that much. (Every node of a
// test shares one process: a stall of the whole process, seen at over 4 s
// under -race and full load, freezes them all at once, and each then starts
// over as a node frozen past the peer timeout must.)
const (
	testHeartbeat   = 250 * time.Millisecond
	testPeerTimeout = 8 * time.Second
)

// node is one proxy of a test cluster: a forward.Server behind an httptest
// server, linked to NATS through a fault proxy.
type node struct {
	t     testing.TB
	name  string
	fwd   *forward.Server
	bus   *Node
	hs    *httptest.Server
	fault *faultproxy.Proxy
	met   *metrics.Metrics
	done  bool
}

type nodeOpts struct {
	fwd     func(*forward.Options)
	cluster func(*Config)
}

// startNode starts a node named name on nats and waits until it is ready.
func startNode(t testing.TB, nats *natstest.Server, name string, o nodeOpts) *node {
	t.Helper()
	opts := proxytest.Options()
	opts.WriteTimeout = 20 * time.Second
	if o.fwd != nil {
		o.fwd(&opts)
	}
	n := &node{t: t, name: name, met: metrics.New()}
	n.fault = faultproxy.New(t, nats.Addr())
	n.fwd = forward.NewServer(opts, zerolog.Nop(), n.met)
	cfg := Config{
		URL: n.fault.URL(), Name: "test", Node: name,
		Heartbeat: testHeartbeat, PeerTimeout: testPeerTimeout,
		ChunkBytes: 64 << 10, WindowBytes: 1 << 20,
		Policy: opts.SlowConsumer, WriteTimeout: opts.WriteTimeout,
	}
	if o.cluster != nil {
		o.cluster(&cfg)
	}
	bus, err := New(cfg, n.fwd, testLogger(t, name), n.met)
	if err != nil {
		t.Fatal(err)
	}
	n.bus = bus
	n.fwd.SetBus(bus)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n.hs = httptest.NewServer(n.fwd)
	t.Cleanup(n.stop)
	waitFor(t, 20*time.Second, name+" ready", func() bool { return n.fwd.Ready() == nil })
	return n
}

// testLogger logs a node's info lines: to the test's output with -v, else
// kept and shown only if the test fails.
func testLogger(t testing.TB, name string) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Str("n", name).Logger().Level(zerolog.InfoLevel)
	}
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, buf.String())
		}
	})
	return zerolog.New(buf).With().Timestamp().Logger().Level(zerolog.InfoLevel)
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to tell what happened
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop stops the node gracefully: drain, close every client (1001), leave
// the cluster.
func (n *node) stop() {
	if n.done {
		return
	}
	n.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.fwd.Shutdown(ctx)
	n.bus.Close()
	n.hs.Close()
}

// kill ends the node as a crash would: its NATS connection and its clients'
// connections are cut, with nothing said to anyone.
func (n *node) kill() {
	if n.done {
		return
	}
	n.done = true
	n.fault.Cut()
	n.hs.CloseClientConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.fwd.Shutdown(ctx)
	n.bus.crash()
	n.hs.Close()
}

func (n *node) url(id, group string) string {
	u := strings.Replace(n.hs.URL, "http://", "ws://", 1) + "/ws"
	return u + "?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMembers waits until every node's registry shows n members in group.
func waitMembers(t testing.TB, group string, want int, nodes ...*node) {
	t.Helper()
	for _, nd := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for nd.bus.GroupCounts()[group] != want {
			if time.Now().After(deadline) {
				var seen []string
				for _, m := range nd.bus.Members(group) {
					seen = append(seen, m.ID+"@"+m.Node)
				}
				sort.Strings(seen)
				t.Fatalf("timed out after 20s waiting for %s to see %d members of %s; it sees %v", nd.name, want, group, seen)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// client is a test WebSocket client that logs every message it receives
// and how its connection ended.
type client struct {
	t    testing.TB
	id   string
	conn *websocket.Conn

	gate chan struct{} // if not nil, each read waits for a token (a frozen or slow reader)

	mu     sync.Mutex
	msgs   []rcvd
	closed chan struct{}
	code   websocket.StatusCode
	reason string
	err    error
}

type rcvd struct {
	typ  websocket.MessageType
	data []byte
}

func dial(t testing.TB, n *node, id, group string) *client {
	t.Helper()
	return dialGated(t, n, id, group, nil)
}

// dialGated is dial for a client that reads a message only when gate gives
// it a token (closing gate lets it read freely).
func dialGated(t testing.TB, n *node, id, group string, gate chan struct{}) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, n.url(id, group), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s on %s: %v (HTTP %d)", id, n.name, err, status)
	}
	conn.SetReadLimit(-1)
	c := &client{t: t, id: id, conn: conn, closed: make(chan struct{}), gate: gate}
	go c.read()
	t.Cleanup(func() { c.conn.CloseNow(); <-c.closed })
	// The handshake's answer comes just before the member joins its group:
	// wait for the join (a message started from now on reaches it), unless
	// it was closed meanwhile (replaced).
	waitFor(t, 20*time.Second, id+" to join on "+n.name, func() bool {
		if m := n.fwd.Registry().Member(group, id); m != nil {
			return true
		}
		select {
		case <-c.closed:
			return true
		default:
			return false
		}
	})
	return c
}

// dialStatus tries to connect and returns the HTTP status of a refusal (0
// if it connected; the connection is then closed).
func dialStatus(t testing.TB, n *node, id, group string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, n.url(id, group), nil)
	if err == nil {
		conn.CloseNow()
		return 0
	}
	if resp != nil {
		return resp.StatusCode
	}
	return -1
}

func (c *client) read() {
	defer close(c.closed)
	for {
		if c.gate != nil {
			<-c.gate
		}
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.err = err
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				c.code, c.reason = ce.Code, ce.Reason
			}
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, rcvd{typ, data})
		c.mu.Unlock()
	}
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// bySender counts the messages received by the sender hash at their front
// (see payload).
func (c *client) bySender() map[uint32]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint32]int{}
	for _, m := range c.msgs {
		if len(m.data) >= 16 {
			out[binary.BigEndian.Uint32(m.data)]++
		}
	}
	return out
}

func (c *client) received() []rcvd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rcvd(nil), c.msgs...)
}

// isClosed reports whether the connection has ended, and with what code
// (-1: without a close frame).
func (c *client) status() (bool, websocket.StatusCode) {
	select {
	case <-c.closed:
	default:
		return false, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.code == 0 {
		return true, -1
	}
	return true, c.code
}

func (c *client) waitCount(n int, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, fmt.Sprintf("%s to receive %d messages", c.id, n), func() bool {
		closed, _ := c.status()
		return c.count() >= n || closed
	})
	if got := c.count(); got < n {
		_, code := c.status()
		c.t.Fatalf("%s: got %d of %d messages, closed with %d %q", c.id, got, n, code, c.reason)
	}
}

func (c *client) waitClosed(d time.Duration) websocket.StatusCode {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(d):
		c.t.Fatalf("%s still open after %v", c.id, d)
	}
	_, code := c.status()
	return code
}

func (c *client) send(typ websocket.MessageType, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.conn.Write(ctx, typ, p)
}

// payload is message i of sender from, of size bytes (at least 16): its
// sender's name hash, its number, then bytes that depend on both, so that a
// receiver can check each message whole and in order.
func payload(from string, i, size int) []byte {
	p := make([]byte, size)
	if size < 16 {
		return p
	}
	h := crc32.ChecksumIEEE([]byte(from))
	binary.BigEndian.PutUint32(p[0:], h)
	binary.BigEndian.PutUint32(p[4:], uint32(i))
	binary.BigEndian.PutUint64(p[8:], uint64(size))
	x := h ^ uint32(i)*2654435761
	for j := 16; j < size; j++ {
		x = x*1664525 + 1013904223
		p[j] = byte(x >> 24)
	}
	return p
}

// textPayload is payload as valid UTF-8 (printable ASCII).
func textPayload(from string, i, size int) []byte {
	p := payload(from, i, size)
	for j := range p {
		p[j] = 'a' + p[j]%26
	}
	return p
}

// judge checks a receiver's log against what each sender sent (in order):
// every message it got is the next one of its sender, byte for byte (never
// a gap, never a repeat, never its own); a log that is not complete must
// end with the connection closed with one of allowed. It returns whether the
// log is complete.
func judge(t testing.TB, c *client, sent map[string][]rcvd, allowed ...websocket.StatusCode) bool {
	t.Helper()
	return judgeEnded(t, c, sent, nil, allowed...)
}

// judgeEnded is judge where the senders in ended were closed while sending:
// their last messages may never have been read by their proxy (a client's
// write returns once its socket took the bytes), so a receiver may end
// their streams anywhere; every message it got must still be the next.
func judgeEnded(t testing.TB, c *client, sent map[string][]rcvd, ended map[string]bool, allowed ...websocket.StatusCode) bool {
	t.Helper()
	next := map[string]int{}
	for i, m := range c.received() {
		matched := false
		for from, msgs := range sent {
			k := next[from]
			if from != c.id && k < len(msgs) && msgs[k].typ == m.typ && bytes.Equal(msgs[k].data, m.data) {
				next[from]++
				matched = true
				break
			}
		}
		if !matched {
			t.Errorf("%s: message %d (%d bytes) is not the next message of any sender: a gap, a repeat or corrupt bytes", c.id, i, len(m.data))
			return false
		}
	}
	complete := true
	for from, msgs := range sent {
		if from != c.id && next[from] < len(msgs) && !ended[from] {
			complete = false
		}
	}
	if complete {
		return true
	}
	closed, code := c.status()
	if !closed {
		t.Errorf("%s: incomplete log (%v of %v) and still open: a silent loss", c.id, next, lens(sent))
		return false
	}
	for _, a := range allowed {
		if code == a {
			return false
		}
	}
	t.Errorf("%s: incomplete log (%v of %v), closed with %d %q; allowed: %v", c.id, next, lens(sent), code, c.reason, allowed)
	return false
}

func lens(sent map[string][]rcvd) map[string]int {
	out := map[string]int{}
	for k, v := range sent {
		out[k] = len(v)
	}
	return out
}
