package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/metrics"
)

// startPresence is startServer with /ws/events routed as cmd/proxy routes it.
func startPresence(t testing.TB, mod ...func(*Options)) *testServer {
	t.Helper()
	opts := testOptions()
	for _, f := range mod {
		f(&opts)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	s := NewServer(opts, log, metrics.New())
	mux := http.NewServeMux()
	mux.Handle("/ws", s)
	mux.Handle("/ws/events", s.Events())
	hs := httptest.NewServer(mux)
	ts := &testServer{Server: s, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		hs.Close()
	})
	return ts
}

func eventsURL(ts *testServer, group, since string) string {
	u := ts.url + "/events?groupName=" + url.QueryEscape(group)
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	return u
}

// watch connects a watcher of group and waits until the hub has it.
func watch(t testing.TB, ts *testServer, group, since string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, eventsURL(ts, group, since), nil)
	if err != nil {
		t.Fatalf("watch %s: %v", group, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

type event struct {
	Type     string `json:"type"`
	Group    string `json:"group"`
	Epoch    string `json:"epoch"`
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	At       string `json:"at"`
	Replaced bool   `json:"replaced"`
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	Members  []struct {
		ID    string `json:"id"`
		Since string `json:"since"`
	} `json:"members"`
}

func readEvent(t testing.TB, c *websocket.Conn) event {
	t.Helper()
	typ, b := readMsg(t, c, 10*time.Second)
	if typ != websocket.MessageText {
		t.Fatalf("event is a %v message", typ)
	}
	var ev event
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("event %q: %v", b, err)
	}
	return ev
}

// expectEvent reads the next event and checks it against want's set fields
// (and seq, always).
func expectEvent(t testing.TB, c *websocket.Conn, want event) event {
	t.Helper()
	ev := readEvent(t, c)
	if ev.Type != want.Type || ev.ID != want.ID || ev.Seq != want.Seq || ev.Replaced != want.Replaced ||
		ev.Code != want.Code || (want.Reason != "" && ev.Reason != want.Reason) || (want.Epoch != "" && ev.Epoch != want.Epoch) {
		t.Fatalf("event %+v, want %+v", ev, want)
	}
	if ev.Type != "snapshot" {
		if _, err := time.Parse(time.RFC3339Nano, ev.At); err != nil {
			t.Fatalf("event at %q: %v", ev.At, err)
		}
	}
	return ev
}

func TestPresenceSnapshot(t *testing.T) {
	ts := startPresence(t)
	before := time.Now()
	dial(t, ts, "bob", "g")
	dial(t, ts, "alice", "g")
	dial(t, ts, "carol", "other")
	w := watch(t, ts, "g", "")
	ev := readEvent(t, w)
	if ev.Type != "snapshot" || ev.Group != "g" || ev.Epoch == "" || ev.Seq != 0 || len(ev.Members) != 2 ||
		ev.Members[0].ID != "alice" || ev.Members[1].ID != "bob" {
		t.Fatalf("snapshot %+v", ev)
	}
	for _, m := range ev.Members {
		since, err := time.Parse(time.RFC3339Nano, m.Since)
		if err != nil || since.Before(before.Add(-time.Second)) || since.After(time.Now()) {
			t.Fatalf("member %s since %q (%v)", m.ID, m.Since, err)
		}
	}
	// A group nobody is in: an empty snapshot, and no group is created.
	w2 := watch(t, ts, "empty", "")
	if ev := readEvent(t, w2); ev.Type != "snapshot" || len(ev.Members) != 0 {
		t.Fatalf("snapshot of an empty group %+v", ev)
	}
	if ts.registry.Get("empty") != nil {
		t.Fatal("a watcher created a group")
	}
}

// TestPresenceEvents: exactly one event per join, replacement, kick, client
// close, drop and eviction, with the right code, and seq gap-free.
func TestPresenceEvents(t *testing.T) {
	ts := startPresence(t, func(o *Options) {
		o.SlowConsumer = Disconnect
		o.SendQueueBytes = 256 << 10
	})
	w := watch(t, ts, "g", "")
	snap := expectEvent(t, w, event{Type: "snapshot"})
	e := snap.Epoch
	seq := snap.Seq

	next := func(want event) {
		t.Helper()
		seq++
		want.Seq, want.Epoch = seq, e
		expectEvent(t, w, want)
	}

	a := dial(t, ts, "a", "g")
	next(event{Type: "join", ID: "a"})
	a2 := dial(t, ts, "a", "g") // replaces a: one join, no leave
	next(event{Type: "join", ID: "a", Replaced: true})
	expectClose(t, a, 4001, 5*time.Second)

	if err := ts.Kick("g", "a"); err != nil {
		t.Fatal(err)
	}
	next(event{Type: "leave", ID: "a", Code: 4003, Reason: "kicked"})
	expectClose(t, a2, 4003, 5*time.Second)

	b := dial(t, ts, "b", "g")
	next(event{Type: "join", ID: "b"})
	b.Close(websocket.StatusNormalClosure, "a client's own words")
	next(event{Type: "leave", ID: "b", Code: 1000, Reason: "closed by client"})

	c := dialRaw(t, ts, "c", "g")
	next(event{Type: "join", ID: "c"})
	c.drop()
	next(event{Type: "leave", ID: "c", Code: 1006, Reason: "connection dropped"})

	// A frozen member under the disconnect policy: evicted, 1008.
	frozen := dialRaw(t, ts, "frozen", "g")
	next(event{Type: "join", ID: "frozen"})
	sender := dial(t, ts, "sender", "g")
	next(event{Type: "join", ID: "sender"})
	msg := make([]byte, 64<<10)
	for i := 0; i < 2000 && ts.registry.Member("g", "frozen") != nil; i++ {
		writeMsg(t, sender, websocket.MessageBinary, msg)
	}
	next(event{Type: "leave", ID: "frozen", Code: 1008, Reason: "slow consumer"})
	frozen.drop()
	sender.Close(websocket.StatusGoingAway, "")
	next(event{Type: "leave", ID: "sender", Code: 1001, Reason: "closed by client"})
	expectNothing(t, w, 300*time.Millisecond)
}

func TestPresenceSince(t *testing.T) {
	ts := startPresence(t, func(o *Options) { o.Presence.History = 4 })
	w := watch(t, ts, "g", "")
	snap := expectEvent(t, w, event{Type: "snapshot"})
	w.Close(websocket.StatusNormalClosure, "")
	a := dial(t, ts, "a", "g") // seq 1
	dial(t, ts, "b", "g")      // seq 2
	a.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, func() bool { return ts.registry.Member("g", "a") == nil }) // seq 3

	// Replay: the missed events, no snapshot.
	r := watch(t, ts, "g", fmt.Sprintf("%s:%d", snap.Epoch, snap.Seq))
	expectEvent(t, r, event{Type: "join", ID: "a", Seq: 1, Epoch: snap.Epoch})
	expectEvent(t, r, event{Type: "join", ID: "b", Seq: 2})
	expectEvent(t, r, event{Type: "leave", ID: "a", Seq: 3, Code: 1000})
	dial(t, ts, "c", "g")
	expectEvent(t, r, event{Type: "join", ID: "c", Seq: 4})

	// Up to date: nothing at all until the next event.
	u := watch(t, ts, "g", snap.Epoch+":4")
	expectNothing(t, u, 200*time.Millisecond)

	// Fallbacks: a snapshot for a wrong epoch, a seq from the future, and
	// a seq older than the history (4 events: 1 is gone once 5 exists).
	dial(t, ts, "d", "g") // seq 5
	expectEvent(t, r, event{Type: "join", ID: "d", Seq: 5})
	for _, since := range []string{"other-1:3", snap.Epoch + ":99", snap.Epoch + ":0"} {
		f := watch(t, ts, "g", since)
		ev := expectEvent(t, f, event{Type: "snapshot", Seq: 5})
		if len(ev.Members) != 3 {
			t.Fatalf("since %s: snapshot %+v", since, ev)
		}
	}
	// The oldest event still held replays.
	f := watch(t, ts, "g", snap.Epoch+":1")
	expectEvent(t, f, event{Type: "join", ID: "b", Seq: 2})

	// Malformed: 400 before the upgrade.
	for _, q := range []string{"since=x", "since=e:1&since=e:2", "since=e:-1"} {
		resp, err := http.Get(ts.http.URL + "/ws/events?groupName=g&" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "since") {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

// TestPresenceEpochAfterLinger: state dropped with the last watcher (no
// linger) means a new epoch, and since falls back to a snapshot.
func TestPresenceEpochAfterLinger(t *testing.T) {
	ts := startPresence(t, func(o *Options) { o.Presence.Linger = -1 })
	w := watch(t, ts, "g", "")
	snap := expectEvent(t, w, event{Type: "snapshot"})
	w.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, func() bool { return ts.presence.Watched() == 0 })
	r := watch(t, ts, "g", snap.Epoch+":0")
	if ev := expectEvent(t, r, event{Type: "snapshot"}); ev.Epoch == snap.Epoch {
		t.Fatalf("epoch %s kept after the state was dropped", ev.Epoch)
	}
}

func TestPresenceIsolation(t *testing.T) {
	ts := startPresence(t)
	w := watch(t, ts, "g1", "")
	expectEvent(t, w, event{Type: "snapshot"})
	x := dial(t, ts, "x", "g2")
	x.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, func() bool { return ts.registry.Get("g2") == nil })
	dial(t, ts, "y", "g1")
	ev := expectEvent(t, w, event{Type: "join", ID: "y", Seq: 1})
	if ev.Group != "g1" {
		t.Fatalf("event of group %q", ev.Group)
	}
}

// TestPresenceWatchersAreNotMembers: a watcher gets no data, is not in the
// registry, does not keep a group alive, and a data message from it closes
// it with 1008 policy.
func TestPresenceWatchersAreNotMembers(t *testing.T) {
	ts := startPresence(t)
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	w := watch(t, ts, "g", "")
	expectEvent(t, w, event{Type: "snapshot"})
	if n := len(ts.registry.Get("g").Members()); n != 2 {
		t.Fatalf("%d members with a watcher, want 2", n)
	}
	writeMsg(t, a, websocket.MessageText, []byte("hello"))
	if _, p := readMsg(t, b, 5*time.Second); string(p) != "hello" {
		t.Fatalf("b got %q", p)
	}
	a.Close(websocket.StatusNormalClosure, "")
	b.Close(websocket.StatusNormalClosure, "")
	expectEvent(t, w, event{Type: "leave", ID: "a", Seq: 1, Code: 1000})
	expectEvent(t, w, event{Type: "leave", ID: "b", Seq: 2, Code: 1000}) // and no "hello"
	waitUntil(t, func() bool { return ts.registry.Get("g") == nil && ts.registry.Count() == 0 })

	writeMsg(t, w, websocket.MessageText, []byte("may I?"))
	expectClose(t, w, websocket.StatusPolicyViolation, 5*time.Second)
}

// TestPresenceHandshake: the same checks and admission limits as /ws.
func TestPresenceHandshake(t *testing.T) {
	ts := startPresence(t, func(o *Options) { o.Admission.MaxConnections = 1 })
	for _, tc := range []struct {
		query, origin string
		status        int
	}{
		{"", "", http.StatusBadRequest},
		{"groupName=", "", http.StatusBadRequest},
		{"groupName=g&groupName=h", "", http.StatusBadRequest},
		{"groupName=g", "http://evil.example", http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/ws/events?"+tc.query, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%q origin %q: %d %s, want %d", tc.query, tc.origin, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
		}
	}
	// A watcher holds a connection slot: with --max-connections 1, /ws is refused.
	w := watch(t, ts, "g", "")
	expectEvent(t, w, event{Type: "snapshot"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL(ts.url, "a", "g"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a member past the limit a watcher holds: %v", err)
	}
	// ... and gives it back when it ends.
	w.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, func() bool { return ts.admit.Open() == 0 })
	dial(t, ts, "a", "g")
}

// dialRawWatcher is a watcher that never reads, with a small receive
// buffer so that it stops accepting bytes soon.
func dialRawWatcher(t testing.TB, ts *testServer, group string) *rawClient {
	t.Helper()
	u, _ := url.Parse(ts.http.URL)
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /ws/events?groupName=" + url.QueryEscape(group) + " HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw watcher: %v %v", resp, err)
	}
	return &rawClient{t: t, nc: nc, br: br}
}

// TestPresenceFrozenWatcher: a watcher that reads nothing is evicted (1008)
// while members join, leave and exchange messages at full speed.
func TestPresenceFrozenWatcher(t *testing.T) {
	ts := startPresence(t, func(o *Options) {
		o.SendQueueBytes = 16 << 10
		// Longer than the test takes: the frozen watcher is closed because
		// its queue overflowed, not because the write timed out.
		o.WriteTimeout = 60 * time.Second
	})
	raw := dialRawWatcher(t, ts, "g")
	waitUntil(t, func() bool { return len(ts.presence.Watchers()) == 1 })
	frozen := ts.presence.Watchers()[0]
	healthy := watch(t, ts, "g", "")
	waitUntil(t, func() bool { return len(ts.presence.Watchers()) == 2 })
	closed := func() bool {
		select {
		case <-frozen.Closing():
			return true
		default:
			return false
		}
	}
	evicted := metricValue(t, ts, "wsproxy_evictions_total", "reason=queue_full")

	// Data at full speed meanwhile.
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	dataDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range 2000 {
			if err := a.Write(ctx, websocket.MessageBinary, []byte{byte(i)}); err != nil {
				dataDone <- err
				return
			}
			if _, p, err := b.Read(ctx); err != nil || p[0] != byte(i) {
				dataDone <- fmt.Errorf("b: %v", err)
				return
			}
		}
		dataDone <- nil
	}()
	// Healthy watcher reads everything, concurrently.
	var last uint64
	readDone := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for {
			_, p, err := healthy.Read(ctx)
			if err != nil {
				readDone <- nil
				return
			}
			var ev event
			_ = json.Unmarshal(p, &ev)
			if ev.Type != "snapshot" && ev.Seq != last+1 {
				readDone <- fmt.Errorf("healthy watcher: seq %d after %d", ev.Seq, last)
				return
			}
			last = ev.Seq
		}
	}()
	long := strings.Repeat("x", 120)
	start := time.Now()
	var joins atomic.Int64
	var churn sync.WaitGroup
	for c := range 4 {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for i := 0; !closed() && time.Since(start) < 45*time.Second; i++ {
				m, _, err := websocket.Dial(context.Background(), wsURL(ts.url, fmt.Sprintf("%s%d-%d", long, c, i), "g"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				m.CloseNow()
				joins.Add(1)
			}
		}()
	}
	churn.Wait()
	if !closed() {
		t.Fatal("the frozen watcher was never closed")
	}
	if err := <-dataDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("frozen watcher closed after %d joins and leaves, %v", joins.Load(), time.Since(start))
	// The frozen watcher was closed for its full queue. (The healthy one
	// may have been too, if a loaded machine starved its reader: its queue
	// is only 16 KiB; so the count is at least one more, not exactly.)
	if code, reason, _ := frozen.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "slow consumer" {
		t.Fatalf("the frozen watcher was closed with %d %q, want 1008 \"slow consumer\"", code, reason)
	}
	if got := metricValue(t, ts, "wsproxy_evictions_total", "reason=queue_full"); got < evicted+1 {
		t.Fatalf("evictions{queue_full} %v, want at least %v", got, evicted+1)
	}
	// Reading again, it gets what was sent before the eviction, then 1008.
	raw.expectClose(int(websocket.StatusPolicyViolation), 30*time.Second)
	healthy.Close(websocket.StatusNormalClosure, "")
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
}

// TestPresenceChurn: 20 watchers, members joining, replacing one another
// and leaving from several goroutines: every watcher sees seq without a gap,
// never a join of a member it has or a leave of one it has not, and the
// members its events add up to are none once every member has gone.
func TestPresenceChurn(t *testing.T) {
	ts := startPresence(t)
	const watchers, churners, rounds = 20, 4, 25
	results := make(chan error, watchers)
	var conns []*websocket.Conn
	for range watchers {
		conns = append(conns, watch(t, ts, "g", ""))
	}
	for _, w := range conns {
		go func() {
			ms := map[string]bool{}
			var seq uint64
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			for {
				_, p, err := w.Read(ctx)
				if err != nil {
					results <- err
					return
				}
				var ev event
				if err := json.Unmarshal(p, &ev); err != nil {
					results <- err
					return
				}
				if ev.Type == "snapshot" {
					seq = ev.Seq
					for _, m := range ev.Members {
						ms[m.ID] = true
					}
					continue
				}
				if ev.Seq != seq+1 {
					results <- fmt.Errorf("seq %d after %d", ev.Seq, seq)
					return
				}
				seq = ev.Seq
				switch {
				case ev.Type == "join" && ev.Replaced != ms[ev.ID]:
					results <- fmt.Errorf("join %s (replaced %v) when present is %v", ev.ID, ev.Replaced, ms[ev.ID])
					return
				case ev.Type == "leave" && !ms[ev.ID]:
					results <- fmt.Errorf("leave of %s, absent", ev.ID)
					return
				}
				if ev.Type == "join" {
					ms[ev.ID] = true
				} else {
					delete(ms, ev.ID)
				}
				if ev.ID == "end" {
					delete(ms, "end")
					if len(ms) != 0 {
						results <- fmt.Errorf("members left over: %v", ms)
						return
					}
					results <- nil
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []*websocket.Conn
	for c := range churners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range rounds {
				id := fmt.Sprintf("m%d-%d", c, i%5) // ids come back: replacements
				m, _, err := websocket.Dial(ctx, wsURL(ts.url, id, "g"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				switch i % 3 {
				case 0:
					m.CloseNow()
				case 1:
					m.Close(websocket.StatusNormalClosure, "")
				default:
					mu.Lock()
					open = append(open, m)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, m := range open {
		m.CloseNow()
	}
	waitUntil(t, func() bool { return ts.registry.Count() == 0 })
	dial(t, ts, "end", "g")
	for range watchers {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	waitFor(t, 10*time.Second, "presence condition", cond)
}
