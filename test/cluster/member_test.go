//go:build cluster

package cluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Every message the test sends says who sent it and proves its own bytes:
//
//	wsct <kind> <sender> <counter> <t|b> <length> <sha256 of the payload>\n<payload>
//
// kind "d" is data, whose counter runs 1, 2, 3... per sender; kind "h" is a
// hello, sent until every member has heard every other one (the membership
// barrier), and not counted. The payload is pseudo-random, from the sender
// and counter: UTF-8 for text, any byte for binary.
const magic = "wsct"

// header is a message's first line, parsed.
type header struct {
	kind    string // "d" or "h"
	sender  string
	counter int
	typ     websocket.MessageType
	length  int
}

func encode(kind, sender string, counter int, typ websocket.MessageType, size int) []byte {
	payload := payloadOf(sender, counter, typ, size)
	sum := sha256.Sum256(payload)
	t := "b"
	if typ == websocket.MessageText {
		t = "t"
	}
	head := fmt.Sprintf("%s %s %s %d %s %d %s\n", magic, kind, sender, counter, t, size, hex.EncodeToString(sum[:]))
	return append([]byte(head), payload...)
}

// decode checks a received message against its own header.
func decode(typ websocket.MessageType, data []byte) (header, error) {
	line, payload, ok := bytes.Cut(data, []byte{'\n'})
	if !ok {
		return header{}, fmt.Errorf("no header line in a %v message of %d bytes", typ, len(data))
	}
	f := strings.Fields(string(line))
	if len(f) != 7 || f[0] != magic {
		return header{}, fmt.Errorf("bad header %.100q", line)
	}
	h := header{kind: f[1], sender: f[2], typ: websocket.MessageBinary}
	if f[4] == "t" {
		h.typ = websocket.MessageText
	}
	var err1, err2 error
	h.counter, err1 = strconv.Atoi(f[3])
	h.length, err2 = strconv.Atoi(f[5])
	if err1 != nil || err2 != nil {
		return h, fmt.Errorf("bad header %.100q", line)
	}
	if typ != h.typ {
		return h, fmt.Errorf("%s #%d: a %v message, sent as %v", h.sender, h.counter, typ, h.typ)
	}
	if len(payload) != h.length {
		return h, fmt.Errorf("%s #%d: %d payload bytes, sent %d", h.sender, h.counter, len(payload), h.length)
	}
	sum := sha256.Sum256(payload)
	if hex.EncodeToString(sum[:]) != f[6] {
		return h, fmt.Errorf("%s #%d: payload of %d bytes differs from what was sent (sha256)", h.sender, h.counter, len(payload))
	}
	return h, nil
}

// textRunes are what text payloads are made of: one to four bytes each.
var textRunes = []string{"a", "b", "c", "x", "y", "z", " ", "0", "9", "é", "ß", "✓", "€", "👋", "𝄞"}

func payloadOf(sender string, counter int, typ websocket.MessageType, size int) []byte {
	var seed [32]byte
	copy(seed[:], sender)
	binary.LittleEndian.PutUint64(seed[24:], uint64(counter))
	rng := rand.NewChaCha8(seed)
	if typ == websocket.MessageBinary {
		b := make([]byte, size)
		_, _ = rng.Read(b)
		return b
	}
	r := rand.New(rng)
	b := make([]byte, 0, size)
	for len(b) < size {
		s := textRunes[r.IntN(len(textRunes))]
		if len(b)+len(s) > size {
			s = "a"
		}
		b = append(b, s...)
	}
	return b
}

// group is a group's members, wherever they are connected.
type group struct {
	name    string
	members []*member
}

// member is one real WebSocket client: a reader that checks every message
// from dial until the connection ends, and a sender started on demand.
type member struct {
	id    string
	node  *node
	group *group
	conn  *websocket.Conn

	sent atomic.Int64 // data messages whose Write returned nil: 1..sent were sent

	// Guarded by mu. Written by the reader and the sender.
	mu         sync.Mutex
	got        map[string]int  // sender id -> last data counter received from it
	hellosFrom map[string]bool // senders a hello came from
	received   int             // data messages received
	violation  error           // the first thing wrong with the log; nil while it is good
	sendErr    error           // why the sender stopped early, if it did
	endErr     error           // why the reader ended (set before ended is closed)
	endAt      time.Time

	ended chan struct{} // closed when the reader has ended
}

// join connects a new member of g to n and starts its reader; the test's
// end closes it.
func join(t *testing.T, g *group, n *node, id string) *member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, wsURL(n.addr, id, g.name), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("%s: dial %s (%s): %v (HTTP %d)", id, n.service, n.addr, err, status)
	}
	conn.SetReadLimit(-1)
	m := &member{
		id: id, node: n, group: g, conn: conn,
		got:        map[string]int{},
		hellosFrom: map[string]bool{},
		ended:      make(chan struct{}),
	}
	g.members = append(g.members, m)
	t.Cleanup(func() {
		conn.CloseNow()
		<-m.ended
	})
	go m.read()
	return m
}

func wsURL(addr, id, group string) string {
	return "ws://" + addr + "/ws?" + url.Values{"id": {id}, "groupName": {group}}.Encode()
}

// dialStatus is the HTTP status a new connection to n gets (101 if it was
// accepted, 0 if n did not answer); an accepted connection is closed again.
func dialStatus(n *node, id, group string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, wsURL(n.addr, id, group), nil)
	if err == nil {
		conn.Close(websocket.StatusNormalClosure, "")
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

func (m *member) String() string { return m.id + "@" + m.node.service }

func (m *member) read() {
	defer close(m.ended)
	for {
		typ, data, err := m.conn.Read(context.Background())
		if err != nil {
			m.mu.Lock()
			m.endErr, m.endAt = err, time.Now()
			m.mu.Unlock()
			return
		}
		m.check(typ, data)
	}
}

// check records one received message; anything wrong with it becomes the
// log's violation.
func (m *member) check(typ websocket.MessageType, data []byte) {
	h, err := decode(typ, data)
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) {
		if m.violation == nil {
			m.violation = fmt.Errorf("after %d messages: %w", m.received, err)
		}
	}
	switch {
	case err != nil:
		fail(err)
	case h.sender == m.id:
		fail(fmt.Errorf("its own message %s #%d came back", h.kind, h.counter))
	case h.kind == "h":
		m.hellosFrom[h.sender] = true
	case h.kind != "d":
		fail(fmt.Errorf("unknown kind %q", h.kind))
	case h.counter != m.got[h.sender]+1:
		fail(fmt.Errorf("gap: %s #%d after #%d", h.sender, h.counter, m.got[h.sender]))
	default:
		m.got[h.sender] = h.counter
		m.received++
	}
}

// send writes one data message, the next of m's counter; false if the write
// failed (recorded as sendErr).
func (m *member) send(typ websocket.MessageType, size int) bool {
	counter := int(m.sent.Load()) + 1
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.conn.Write(ctx, typ, encode("d", m.id, counter, typ, size)); err != nil {
		m.mu.Lock()
		if m.sendErr == nil {
			m.sendErr = err
		}
		m.mu.Unlock()
		return false
	}
	m.sent.Store(int64(counter))
	return true
}

// state is a snapshot of what the reader saw.
type state struct {
	got       map[string]int
	received  int
	violation error
	ended     bool
	code      int // the close code, or 1006 for an end without a close frame; 0 while open
	endErr    error
	endAt     time.Time
	stopped   bool // the sender stopped early or the connection ended
}

func (m *member) state() state {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := state{got: maps(m.got), received: m.received, violation: m.violation, endErr: m.endErr, endAt: m.endAt}
	if m.endErr != nil {
		s.ended = true
		s.code = closeCode(m.endErr)
	}
	s.stopped = s.ended || m.sendErr != nil
	return s
}

func maps(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// closeCode is the code of the close frame that ended a connection, or 1006
// when it ended without one (EOF, reset).
func closeCode(err error) int {
	if code := websocket.CloseStatus(err); code != -1 {
		return int(code)
	}
	return int(websocket.StatusAbnormalClosure)
}

// expected is how many data messages of s its group's receivers must have
// got for their logs to be complete: all it sent while its connection is
// open; once it has ended, a message it wrote may never have been read by
// its proxy, so it is what the proxy demonstrably relayed: the most any
// receiver got.
func expected(s *member) int {
	st := s.state()
	if !st.stopped {
		return int(s.sent.Load())
	}
	most := 0
	for _, r := range s.group.members {
		if r != s {
			most = max(most, r.state().got[s.id])
		}
	}
	return most
}

// missing says which messages r lacks for a complete log ("" if none).
func missing(r *member, st state) string {
	var gaps []string
	for _, s := range r.group.members {
		if s == r {
			continue
		}
		if want := expected(s); st.got[s.id] < want {
			gaps = append(gaps, fmt.Sprintf("%s #%d-#%d", s.id, st.got[s.id]+1, want))
		}
	}
	return strings.Join(gaps, ", ")
}

// barrier sends hellos from every member of gs every 200 ms until every
// member has heard from every other member of its group: from then on each
// sender's data reaches every receiver, wherever it is connected.
func barrier(t *testing.T, timeout time.Duration, gs ...*group) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, g := range gs {
		for _, m := range g.members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(200 * time.Millisecond)
				defer tick.Stop()
				for i := 1; ; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := m.conn.Write(ctx, websocket.MessageText, encode("h", m.id, i, websocket.MessageText, 0))
					cancel()
					if err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
		}
	}
	defer wg.Wait()
	defer close(stop)
	var lacking, closed string
	eventually(t, timeout, func() bool {
		lacking, closed = "", ""
		for _, g := range gs {
			for _, r := range g.members {
				if st := r.state(); st.ended {
					closed += fmt.Sprintf(" %s (%v)", r, st.endErr)
				}
				r.mu.Lock()
				for _, s := range g.members {
					if s != r && !r.hellosFrom[s.id] {
						lacking += fmt.Sprintf(" %s<-%s", r, s)
					}
				}
				r.mu.Unlock()
			}
		}
		if closed != "" {
			t.Fatalf("membership barrier: closed before every hello arrived:%s; no hello yet at%s", closed, lacking)
		}
		return lacking == ""
	}, func() string { return "membership barrier: no hello yet at" + lacking })
}

// traffic is every given member sending data messages at a pace until stop.
type traffic struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// startTraffic starts each member sending a message every pace, text and
// binary in turn, of 1 byte to maxSize.
func startTraffic(pace time.Duration, maxSize int, members ...*member) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	for i, m := range members {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for n := 1; ; n++ {
				typ := websocket.MessageBinary
				if n%2 == 0 {
					typ = websocket.MessageText
				}
				if !m.send(typ, 1+rng.IntN(maxSize)) {
					return
				}
				select {
				case <-tr.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	return tr
}

// halt stops the senders and waits for each to finish its message. It may
// be called more than once.
func (tr *traffic) halt() {
	tr.stopOnce.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

// settle waits, up to timeout, until every member has either ended, got
// every message of its group's other members, or a bad log. It does not
// fail: judge does.
func settle(timeout time.Duration, gs ...*group) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		done := true
		for _, g := range gs {
			for _, r := range g.members {
				// A log already bad will not mend: the judge says so.
				if st := r.state(); !st.ended && st.violation == nil && missing(r, st) != "" {
					done = false
				}
			}
		}
		if done {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rule is what a fault allows a member's log to be.
type rule struct {
	closes    []int // close codes that may end an incomplete log (1006: no close frame)
	mustClose bool  // the connection must have ended, with one of closes
	mustOpen  bool  // the connection must still be open (and so complete)
}

// judge checks r's log against the rule: every message valid, never its
// own, gap-free per sender; then complete, or ended by an allowed close.
// It returns a line describing the log, times relative to since.
func judge(t *testing.T, r *member, since time.Time, ru rule) string {
	t.Helper()
	st := r.state()
	miss := missing(r, st)
	desc := fmt.Sprintf("%s (group %s): %d messages", r, r.group.name, st.received)
	if st.ended {
		desc += fmt.Sprintf(", closed %d at %+.2fs", st.code, st.endAt.Sub(since).Seconds())
	} else {
		desc += ", open"
	}
	if miss == "" {
		desc += ", complete"
	} else {
		desc += ", missing " + miss
	}
	switch {
	case st.violation != nil:
		t.Errorf("%s: bad log: %v", desc, st.violation)
	case !st.ended && miss != "":
		t.Errorf("%s: a gap without a close: open, and missing messages its group's other members sent", desc)
	case st.ended && ru.mustOpen:
		t.Errorf("%s: closed (%v), want open: the fault did not touch its group", desc, st.endErr)
	case !st.ended && ru.mustClose:
		t.Errorf("%s: still open, want closed with one of %v", desc, ru.closes)
	case st.ended && (miss != "" || ru.mustClose) && !slices.Contains(ru.closes, st.code):
		t.Errorf("%s: ended by %v, want one of %v", desc, st.endErr, ru.closes)
	}
	return desc
}

// closeAll ends the members' connections normally (CloseNow for those whose
// proxy is gone).
func closeAll(gs ...*group) {
	var wg sync.WaitGroup
	for _, g := range gs {
		for _, m := range g.members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !m.state().ended {
					m.conn.Close(websocket.StatusNormalClosure, "")
				}
				m.conn.CloseNow()
			}()
		}
	}
	wg.Wait()
}
