package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// role is what a connection does for its whole life.
type role int

const (
	roleMember  role = iota // reads everything and sends messages
	roleQuiet               // reads everything, sends nothing
	roleStaller             // reads, but stops reading for a while now and then
	roleSlow                // reads everything, slowly (512 KiB/s to 3 MiB/s): its senders wait
	numRoles
)

func (r role) String() string {
	return [...]string{"member", "quiet", "staller", "slow"}[r]
}

// endKind is how a connection ended, as its client saw it.
type endKind int

const (
	endNone     endKind = iota // still open
	endFinal                   // the soak's close at the end of the run (1000)
	endOwn                     // a client-initiated close during the churn
	endDropped                 // the soak cut the TCP connection
	endPeer                    // the proxy sent a close frame
	endAbnormal                // the connection was lost without a close frame (1006)
)

func (k endKind) String() string {
	return [...]string{"open", "final close", "own close", "dropped by the soak", "closed by the proxy", "lost without a close frame"}[k]
}

// freeze is a pause of a staller's reading. In a plan, at is measured from
// the dial's return; once done, from the start of the run.
type freeze struct {
	at, dur time.Duration
	vanish  bool // cut the TCP connection instead of resuming
}

// sendHow is how one message was written.
type sendHow uint8

const (
	sendWhole      sendHow = iota // one Write, one frame
	sendFragments                 // a Writer, many frames (some empty)
	sendShortStall                // fragments, with a pause under the idle timeout part-way
	sendLongStall                 // fragments, with a pause well over it: the proxy should close with 1008
	sendDrop                      // fragments, then the TCP connection is cut part-way
)

func (h sendHow) String() string {
	return [...]string{"whole", "fragmented", "short stall", "long stall", "dropped mid-message"}[h]
}

// sentMsg is one message a connection started to send.
type sentMsg struct {
	seq    int64
	t0, t1 time.Duration // before the first byte; after the last write returned
	size   int64         // header included
	typ    websocket.MessageType
	how    sendHow
	ok     bool // written completely, final frame included
}

// track is what one receiver got from one sender connection: received
// sequence numbers as ascending, disjoint, inclusive ranges.
type track struct {
	ranges [][2]int64
}

func (t *track) last() int64 {
	if len(t.ranges) == 0 {
		return 0
	}
	return t.ranges[len(t.ranges)-1][1]
}

// add records seq, which must be greater than last().
func (t *track) add(seq int64) {
	if n := len(t.ranges); n > 0 && t.ranges[n-1][1] == seq-1 {
		t.ranges[n-1][1] = seq
		return
	}
	t.ranges = append(t.ranges, [2]int64{seq, seq})
}

func (t *track) has(seq int64) bool {
	i := sort.Search(len(t.ranges), func(i int) bool { return t.ranges[i][1] >= seq })
	return i < len(t.ranges) && t.ranges[i][0] <= seq
}

// conn is one client connection. Its reader goroutine verifies every message
// it receives; a member's sender goroutine sends messages; the slot that
// opened it (or the end of the run) decides when it closes or is dropped.
type conn struct {
	s  *soak
	sl *slot

	// Static after open.
	no                  int64
	group               int
	id                  string
	role                role
	dialStart, dialDone time.Duration
	ws                  *websocket.Conn
	raw                 net.Conn
	bufs                sockBufs
	rate                int64 // a slow reader's bytes per second

	// Control requests: guarded by mu.
	mu        sync.Mutex
	ended     bool // the reader has finished
	selfReq   bool // the client started a close handshake
	selfAt    time.Duration
	selfCode  websocket.StatusCode
	final     bool // that close is the soak's final one
	closeErr  error
	dropReq   bool // the soak cut the TCP connection
	dropAt    time.Duration
	replacing bool // a second connection with this id was dialed

	// Owned by the reader goroutine until readDone is closed.
	readDone   chan struct{}
	plan       []freeze
	endAt      time.Duration
	kind       endKind
	code       int // close code received, -1 for none
	reason     string
	errText    string
	readErr    error
	tracks     map[int64]*track
	frozen     []freeze
	recvMsgs   int64
	recvBytes  int64
	rbuf       []byte
	wasSending bool // a message was being written when the connection ended

	// Owned by the sender goroutine until sendDone is closed.
	sendDone chan struct{}
	sent     []sentMsg
	wbuf     []byte
	hbuf     []byte

	sending   atomic.Bool  // a message is being written
	sendStart atomic.Int64 // when the message being written started (since the run's start)
	stalling  atomic.Bool  // the message being written is in a planned stall
	fast      atomic.Bool  // a slow reader catching up before its end
	freezing  atomic.Bool  // a staller is in a freeze
	// When some receiver first got each of this connection's messages
	// (verified): the proxy had surely read the message by then.
	firstMu   sync.Mutex
	firstRecv map[int64]time.Duration
	done      chan struct{} // closed when reader and sender have both finished
}

func (c *conn) String() string {
	small := ""
	if c.bufs.rcv > 0 {
		small += fmt.Sprintf(", SO_RCVBUF %s", sizeString(int64(c.bufs.rcv)))
	}
	if c.bufs.snd > 0 {
		small += fmt.Sprintf(", SO_SNDBUF %s", sizeString(int64(c.bufs.snd)))
	}
	if c.rate > 0 {
		small += fmt.Sprintf(", reads %s/s", sizeString(c.rate))
	}
	return fmt.Sprintf("conn #%d (group %d %q, id %s, %s%s)", c.no, c.group, c.s.groups[c.group], c.id, c.role, small)
}

// life describes a finished connection for a failure report.
func (c *conn) life() string {
	s := fmt.Sprintf("from %s, dialed %s-%s, ended %s: %s", c.raw.LocalAddr(), ts(c.dialStart), ts(c.dialDone), ts(c.endAt), c.kind)
	if c.code >= 0 {
		s += fmt.Sprintf(" %d %q", c.code, c.reason)
	} else if c.errText != "" {
		s += fmt.Sprintf(" (%s)", c.errText)
	}
	c.mu.Lock()
	if c.selfReq {
		s += fmt.Sprintf("; own close %d requested at %s", c.selfCode, ts(c.selfAt))
		if c.closeErr != nil {
			s += fmt.Sprintf(" (Close: %v)", c.closeErr)
		}
	}
	if c.dropReq {
		s += fmt.Sprintf("; dropped by the soak at %s", ts(c.dropAt))
	}
	if c.replacing {
		s += "; a replacement was dialed"
	}
	c.mu.Unlock()
	if isClosed(c.sendDone) && len(c.sent) > 0 {
		m := c.sent[len(c.sent)-1]
		s += fmt.Sprintf("; last message seq %d: %s %s, %s, written %s-%s", m.seq, sizeString(m.size), typeName(m.typ), m.how, ts(m.t0), ts(m.t1))
		if !m.ok {
			s += " (not completed)"
		}
	}
	for _, f := range c.frozen {
		s += fmt.Sprintf("; frozen %s for %v", ts(f.at), f.dur.Round(time.Millisecond))
		if f.vanish {
			s += " then vanished"
		}
	}
	return s
}

// dial opens a WebSocket connection and returns it with its TCP connection,
// which the soak may cut.
//
// Positive buffer sizes set the socket's SO_RCVBUF and SO_SNDBUF, which
// also turns off the kernel's autotuning (up to 32 MiB on loopback): a
// client that reads slowly then fills the proxy's queue within moments, and
// a sender's write returns about when the proxy has read the bytes.
func (s *soak) dial(group int, id string, bufs sockBufs) (*websocket.Conn, net.Conn, error) {
	var mu sync.Mutex
	var raw net.Conn
	dialer := &net.Dialer{}
	if bufs != (sockBufs{}) {
		dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				if bufs.rcv > 0 {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, bufs.rcv)
				}
				if bufs.snd > 0 && serr == nil {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, bufs.snd)
				}
			}); err != nil {
				return err
			}
			return serr
		}
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				raw = c
				mu.Unlock()
			}
			return c, err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws://" + s.target.addr + "/ws?" + url.Values{"id": {id}, "groupName": {s.groups[group]}}.Encode()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if raw == nil {
		ws.CloseNow()
		return nil, nil, errors.New("dial: no TCP connection captured")
	}
	return ws, raw, nil
}

// sockBufs are socket buffer sizes to set (0: the kernel's default).
type sockBufs struct{ rcv, snd int }

// open dials a new connection for slot sl and starts its goroutines. It
// returns nil if the dial failed (a failure is recorded).
func (s *soak) open(sl *slot, rng *rand.Rand) *conn {
	c := &conn{
		s: s, sl: sl, no: s.nextNo.Add(1), group: sl.group, id: sl.id,
		readDone: make(chan struct{}), sendDone: make(chan struct{}), done: make(chan struct{}),
		tracks: map[int64]*track{}, firstRecv: map[int64]time.Duration{}, rbuf: make([]byte, 64<<10), code: -1,
	}
	switch x := rng.Float64(); {
	case x < 0.55:
		c.role = roleMember
	case x < 0.72:
		c.role = roleQuiet
	case x < 0.90:
		c.role = roleStaller
		c.plan = s.freezePlan(rng)
	default:
		c.role = roleSlow
		c.rate = 512<<10 + rng.Int64N(5<<19)
	}
	switch {
	case c.role == roleSlow:
		c.bufs.rcv = 16<<10 + rng.IntN(48<<10)
	case c.role == roleStaller || rng.IntN(4) == 0:
		c.bufs.rcv = 16<<10 + rng.IntN(112<<10)
	}
	if c.role == roleMember {
		// Small, so a write blocks as soon as the proxy stops reading (the
		// kicker looks for such senders), and written bytes do not sit in
		// the client's socket for long.
		c.bufs.snd = 32<<10 + rng.IntN(224<<10)
	}
	senderSeed := rng.Uint64()
	c.dialStart = s.since()
	ws, raw, err := s.dial(c.group, c.id, c.bufs)
	if err != nil {
		s.dialFailures.Add(1)
		s.fail(failDial, "%s: dial at %s failed: %v", c, ts(c.dialStart), err)
		return nil
	}
	c.dialDone = s.since()
	c.ws, c.raw = ws, raw
	ws.SetReadLimit(s.cfg.maxMsg + 4096)
	s.register(c)
	go c.readLoop()
	if c.role == roleMember {
		go c.sendLoop(rand.New(rand.NewPCG(senderSeed, uint64(c.no))))
	} else {
		close(c.sendDone)
	}
	go func() {
		<-c.readDone
		<-c.sendDone
		s.live.Add(-1)
		close(c.done)
	}()
	return c
}

// freezePlan draws a staller's pauses: short ones (the proxy must not
// notice), medium ones (under --write-timeout: the client must keep its
// connection, or see a close code, never a bare drop) and long ones (the
// proxy may cut the connection), some of them followed by vanishing.
func (s *soak) freezePlan(rng *rand.Rand) []freeze {
	wt := s.cfg.writeTimeout
	var plan []freeze
	at := time.Duration(0)
	for range 1 + rng.IntN(3) {
		at += between(rng, 500*time.Millisecond, 10*time.Second)
		var f freeze
		switch x := rng.Float64(); {
		case x < 0.4:
			f.dur = between(rng, 200*time.Millisecond, 1200*time.Millisecond)
		case x < 0.7:
			f.dur = between(rng, wt*6/10, wt*85/100)
		default:
			f.dur = between(rng, wt+2*time.Second, wt+6*time.Second)
			f.vanish = rng.IntN(2) == 0
		}
		if !f.vanish && rng.IntN(8) == 0 {
			f.vanish = true
		}
		f.at = at
		plan = append(plan, f)
		if f.vanish {
			break
		}
		at += f.dur
	}
	return plan
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// readLoop reads and verifies messages until the connection ends.
func (c *conn) readLoop() {
	defer close(c.readDone)
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err == nil {
			err = c.consume(typ, r)
		}
		if err != nil {
			c.finish(err)
			_ = c.ws.CloseNow() // unblocks the sender
			c.rbuf = nil        // every connection is kept until the end
			return
		}
	}
}

// maybeFreeze carries out the next planned freeze once it is due.
func (c *conn) maybeFreeze() {
	if len(c.plan) == 0 || c.s.since() < c.dialDone+c.plan[0].at {
		return
	}
	f := c.plan[0]
	c.plan = c.plan[1:]
	start := c.s.since()
	c.s.freezes.Add(1)
	c.freezing.Store(true)
	time.Sleep(f.dur)
	c.freezing.Store(false)
	c.frozen = append(c.frozen, freeze{at: start, dur: c.s.since() - start, vanish: f.vanish})
	if f.vanish {
		c.s.vanished.Add(1)
		c.drop()
	}
}

// consume reads one message, verifying it as it goes. An error means the
// connection ended before the message did.
func (c *conn) consume(typ websocket.MessageType, r io.Reader) error {
	buf := c.rbuf
	n := 0
	var (
		h    header
		herr error
		body []byte
	)
	for {
		c.maybeFreeze()
		m, err := r.Read(buf[n:maxHeader])
		n += m
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			h, herr = parseHeader(buf[:i])
			body = buf[i+1 : n]
			if err == io.EOF {
				c.check(typ, h, herr, int64(n), int64(len(body)), crc32.Checksum(body, castagnoli))
				return nil
			}
			break
		}
		if err == io.EOF || n == maxHeader {
			prefix := append([]byte(nil), buf[:min(n, 64)]...)
			rest := int64(0)
			if err == nil {
				var cerr error
				if rest, cerr = io.Copy(io.Discard, r); cerr != nil {
					return cerr
				}
			}
			c.check(typ, header{}, fmt.Errorf("no header line in %d bytes (starts %q)", int64(n)+rest, prefix), int64(n)+rest, 0, 0)
			return nil
		}
		if err != nil {
			return err
		}
	}
	crc := crc32.Checksum(body, castagnoli)
	got := int64(len(body))
	size := int64(n)
	for {
		c.maybeFreeze()
		m, err := r.Read(buf)
		if c.rate > 0 && m > 0 && !c.fast.Load() {
			time.Sleep(time.Duration(int64(m) * int64(time.Second) / c.rate))
		}
		crc = crc32.Update(crc, castagnoli, buf[:m])
		got += int64(m)
		size += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	c.check(typ, h, herr, size, got, crc)
	return nil
}

// check verifies one complete message and records it.
func (c *conn) check(typ websocket.MessageType, h header, herr error, size, bodyLen int64, crc uint32) {
	s := c.s
	now := s.since()
	c.recvMsgs++
	c.recvBytes += size
	s.recvMsgs.Add(1)
	s.recvBytes.Add(size)
	s.lastRecv.Store(int64(now))
	if herr != nil {
		s.fail(failCorrupt, "%s at %s: %s message of %d bytes: %v", c, ts(now), typeName(typ), size, herr)
		return
	}
	sender := s.lookup(h.conn)
	what := fmt.Sprintf("%s at %s: message seq %d from conn #%d (header: group %d, id %s, %s, body %d B)",
		c, ts(now), h.seq, h.conn, h.group, h.id, typeName(h.typ), h.n)
	switch {
	case h.group != c.group:
		s.fail(failCrossGroup, "%s: from another group", what)
	case sender == nil:
		s.fail(failCorrupt, "%s: no such sender connection", what)
	case sender.group != h.group || sender.id != h.id:
		s.fail(failCorrupt, "%s: header does not match the sender (%s)", what, sender)
	case h.id == c.id:
		s.fail(failSelf, "%s: from its own id (sender %s)", what, sender)
	case h.typ != typ:
		s.fail(failCorrupt, "%s: arrived as %s", what, typeName(typ))
	case h.n != bodyLen || h.crc != crc:
		s.fail(failCorrupt, "%s: body is %d B with CRC %08x, want %d B with CRC %08x", what, bodyLen, crc, h.n, h.crc)
	default:
		t := c.tracks[h.conn]
		if t == nil {
			t = &track{}
			c.tracks[h.conn] = t
		}
		if last := t.last(); h.seq <= last {
			s.fail(failOrder, "%s: after seq %d (duplicate or out of order)", what, last)
			return
		}
		t.add(h.seq)
		s.verified.Add(1)
		s.verifiedBytes.Add(size)
		sender.firstMu.Lock()
		if _, ok := sender.firstRecv[h.seq]; !ok {
			sender.firstRecv[h.seq] = now
		}
		sender.firstMu.Unlock()
	}
}

// finish records how the connection ended.
func (c *conn) finish(err error) {
	now := c.s.since()
	c.mu.Lock()
	c.ended = true
	self, final, drop := c.selfReq, c.final, c.dropReq
	c.mu.Unlock()
	c.endAt = now
	c.wasSending = c.sending.Load()
	c.code = int(websocket.CloseStatus(err))
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		c.reason = ce.Reason
	}
	c.errText = err.Error()
	c.readErr = err
	switch {
	case final:
		c.kind = endFinal
	case self:
		c.kind = endOwn
	case drop:
		c.kind = endDropped
	case c.code >= 0:
		c.kind = endPeer
	default:
		c.kind = endAbnormal
	}
	if c.s.cfg.verbose {
		c.s.logf("%s %s: %s", ts(c.endAt), c, c.kind)
	}
}

// echoed reports whether the proxy answered the client's own close with the
// same code: seen by the reader, or by the library's close handshake (which
// then closed the connection under the reader). Valid once done is closed.
func (c *conn) echoed() bool {
	c.mu.Lock()
	own, cerr, self := int(c.selfCode), c.closeErr, c.selfReq
	c.mu.Unlock()
	if !self {
		return false
	}
	return c.code == own || (c.code == -1 && cerr == nil && errors.Is(c.readErr, net.ErrClosed))
}

// drop cuts the TCP connection under the WebSocket, without a close frame.
// It reports false if the connection had already ended or was being closed.
func (c *conn) drop() bool {
	c.mu.Lock()
	if c.ended || c.dropReq || c.selfReq {
		c.mu.Unlock()
		return false
	}
	c.dropReq = true
	c.dropAt = c.s.since()
	c.mu.Unlock()
	_ = c.raw.Close()
	return true
}

// closeWith starts the client's close handshake and waits for it (at most
// about 10 s, the library's bound). It reports false if the connection had
// already ended or was being closed or dropped.
func (c *conn) closeWith(code websocket.StatusCode, reason string, final bool) bool {
	c.mu.Lock()
	if c.ended || c.dropReq || c.selfReq {
		c.mu.Unlock()
		return false
	}
	c.selfReq, c.selfAt, c.selfCode, c.final = true, c.s.since(), code, final
	c.mu.Unlock()
	err := c.ws.Close(code, reason)
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return true
}

// sendTimeout bounds one message's writing (its planned stall aside): a
// sender blocked longer is reported and dropped.
const sendTimeout = 60 * time.Second

// sendLoop sends messages at random intervals until the connection ends or
// the churn is over.
func (c *conn) sendLoop(rng *rand.Rand) {
	defer close(c.sendDone)
	defer func() { c.wbuf, c.hbuf = nil, nil }()
	mean := float64(c.s.cfg.interval)
	for seq := int64(1); ; seq++ {
		wait := time.Duration(min(rng.ExpFloat64()*mean, 5*mean))
		t := time.NewTimer(wait)
		select {
		case <-c.s.stopSend:
			t.Stop()
			return
		case <-c.readDone:
			t.Stop()
			return
		case <-t.C:
		}
		if !c.sendOne(rng, seq) {
			return
		}
	}
}

// sendOne sends message seq; it reports whether it was written completely.
func (c *conn) sendOne(rng *rand.Rand, seq int64) bool {
	s, cfg := c.s, c.s.cfg
	how := sendWhole
	switch x := rng.Float64(); {
	case x < 0.02:
		how = sendDrop
	case x < 0.05:
		how = sendShortStall
	case x < 0.07:
		how = sendLongStall
	case x < 0.45:
		how = sendFragments
	}
	typ := websocket.MessageBinary
	if rng.IntN(2) == 0 {
		typ = websocket.MessageText
	}
	h := header{group: c.group, conn: c.no, seq: seq, typ: typ, id: c.id}
	hlen := int64(len(h.append(c.hbuf[:0])))
	total := messageSize(rng, cfg.bufferBytes, cfg.maxMsg)
	if how == sendWhole && total > 1<<20 {
		how = sendFragments
	}
	if how >= sendShortStall {
		total = max(total, hlen+1024)
	}
	body := s.pools.body(rng, typ, total-hlen)
	h.n, h.crc = int64(len(body)), crc32.Checksum(body, castagnoli)
	c.hbuf = h.append(c.hbuf[:0])
	m := sentMsg{seq: seq, size: int64(len(c.hbuf) + len(body)), typ: typ, how: how}

	limit := sendTimeout
	if how == sendLongStall {
		limit += 3 * cfg.idleTimeout
	}
	stuck := time.AfterFunc(limit, func() {
		if c.drop() {
			s.fail(failStuck, "%s: message seq %d (%s, %s) not written after %v: connection dropped",
				c, seq, sizeString(m.size), how, limit)
		}
	})
	m.t0 = s.since()
	c.sendStart.Store(int64(m.t0))
	c.sending.Store(true)
	err := c.write(rng, how, typ, c.hbuf, body)
	m.t1 = s.since()
	c.sending.Store(false)
	stuck.Stop()
	if how <= sendFragments && m.size <= cfg.bufferBytes && m.t1-m.t0 > 500*time.Millisecond {
		s.blockedWrites.Add(1)
	}
	m.ok = err == nil
	c.sent = append(c.sent, m)
	if m.ok {
		s.sentMsgs.Add(1)
		s.sentBytes.Add(m.size)
	}
	return m.ok
}

// errDropped ends a message whose sender cut its own connection part-way.
var errDropped = errors.New("dropped mid-message on purpose")

func (c *conn) write(rng *rand.Rand, how sendHow, typ websocket.MessageType, hdr, body []byte) error {
	s, cfg := c.s, c.s.cfg
	ctx := context.Background()
	if how == sendWhole {
		c.wbuf = append(append(c.wbuf[:0], hdr...), body...)
		return c.ws.Write(ctx, typ, c.wbuf)
	}
	w, err := c.ws.Writer(ctx, typ)
	if err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	cut := -1 // where the stall or the drop happens
	if how >= sendShortStall {
		cut = len(body) * (10 + rng.IntN(81)) / 100
	}
	interrupt := func() error {
		switch how {
		case sendDrop:
			s.midDrops.Add(1)
			c.drop()
			return errDropped
		case sendShortStall:
			s.shortStalls.Add(1)
			c.stalling.Store(true)
			time.Sleep(between(rng, cfg.idleTimeout/5, cfg.idleTimeout*6/10))
			c.stalling.Store(false)
		case sendLongStall:
			s.longStalls.Add(1)
			c.stalling.Store(true)
			time.Sleep(cfg.idleTimeout*5/2 + time.Second)
			c.stalling.Store(false)
		}
		return nil
	}
	for off := 0; ; {
		if off == cut {
			if err := interrupt(); err != nil {
				return err
			}
		}
		if off == len(body) {
			break
		}
		n := chunkSize(rng)
		if cut > off {
			n = min(n, cut-off)
		}
		n = min(n, len(body)-off)
		if rng.IntN(40) == 0 {
			if _, err := w.Write(nil); err != nil { // an empty frame: no progress
				return err
			}
		}
		if _, err := w.Write(body[off : off+n]); err != nil {
			return err
		}
		off += n
	}
	return w.Close()
}

func chunkSize(rng *rand.Rand) int {
	switch rng.IntN(3) {
	case 0:
		return 1 + rng.IntN(512)
	case 1:
		return 512 + rng.IntN(16<<10)
	}
	return 16<<10 + rng.IntN(240<<10)
}

func typeName(t websocket.MessageType) string {
	switch t {
	case websocket.MessageText:
		return "text"
	case websocket.MessageBinary:
		return "binary"
	}
	return fmt.Sprintf("type %d", t)
}

// ts formats a time since the start of the run.
func ts(d time.Duration) string {
	return fmt.Sprintf("t=%.3fs", d.Seconds())
}
