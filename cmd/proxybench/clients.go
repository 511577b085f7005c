package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
)

// A system is a relay the fan-out workloads run against: wsproxy or NATS.
type system interface {
	// join connects member id of group. onMsg is called with each message
	// the member receives, from one goroutine per member; p is valid only
	// during the call.
	join(ctx context.Context, group, id string, onMsg func(p []byte)) (member, error)
}

// A member is one connected client.
type member interface {
	// send sends one message to the member's group. Not concurrent.
	send(p []byte) error
	close()
}

// Payload header: every message the load generator sends starts with its
// sequence number and its send time (wall clock, ns). Sender and receivers are
// in this process, on one machine.
const headerLen = 16

func putHeader(p []byte, seq uint64, sentNs int64) {
	binary.LittleEndian.PutUint64(p[0:8], seq)
	binary.LittleEndian.PutUint64(p[8:16], uint64(sentNs))
}

func readHeader(p []byte) (seq uint64, sentNs int64, ok bool) {
	if len(p) < headerLen {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(p[0:8]), int64(binary.LittleEndian.Uint64(p[8:16])), true
}

// wsproxySystem: coder/websocket clients of /ws?id=&groupName=.
type wsproxySystem struct{ addr string }

func wsproxyURL(addr, group, id string) string {
	return "ws://" + addr + "/ws?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
}

type wsMember struct {
	c       *websocket.Conn
	sendCtx context.Context
	closing atomic.Bool // set by close, before the connection ends
	done    chan struct{}
}

// ended reports err to onEnd unless the member's own close caused it.
func (m *wsMember) ended(err error, onEnd func(error)) {
	if onEnd != nil && !m.closing.Load() {
		onEnd(err)
	}
}

func (s wsproxySystem) join(ctx context.Context, group, id string, onMsg func([]byte)) (member, error) {
	return joinWS(ctx, wsproxyURL(s.addr, group, id), onMsg, context.Background(), nil)
}

// joinWS connects a member at url. Its sends run under sendCtx (whose end
// closes the connection); onEnd, if set, is called with the read error if
// the connection ends other than by the member's own close.
func joinWS(ctx context.Context, url string, onMsg func([]byte), sendCtx context.Context, onEnd func(error)) (member, error) {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(-1)
	m := &wsMember{c: c, sendCtx: sendCtx, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		buf := make([]byte, 4<<10)
		for {
			_, r, err := c.Reader(context.Background())
			if err != nil {
				m.ended(err, onEnd)
				return
			}
			n := 0
			for {
				if n == len(buf) {
					buf = append(buf, make([]byte, len(buf))...)
				}
				k, err := r.Read(buf[n:])
				n += k
				if err == io.EOF {
					break
				}
				if err != nil {
					m.ended(err, onEnd)
					return
				}
			}
			if onMsg != nil {
				onMsg(buf[:n])
			}
		}
	}()
	return m, nil
}

// watchersPerGroup is -watchers-per-group: presence watchers on each
// wsproxy fan-out group.
var watchersPerGroup int

// watch connects a presence watcher (/ws/events) of group that reads and
// discards every event. It is a member only in that close ends it.
func (s wsproxySystem) watch(ctx context.Context, group string) (member, error) {
	c, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/ws/events?groupName="+url.QueryEscape(group), nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(-1)
	m := &wsMember{c: c, sendCtx: context.Background(), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return m, nil
}

func (m *wsMember) send(p []byte) error {
	return m.c.Write(m.sendCtx, websocket.MessageBinary, p)
}

func (m *wsMember) close() {
	m.closing.Store(true)
	_ = m.c.CloseNow()
	<-m.done
}

// natsSystem: nats.go clients over ws://, NoEcho, one subject per group.
type natsSystem struct{ addr string }

type natsMember struct {
	nc      *nats.Conn
	subject string
}

func natsSubject(group string) string { return "bench." + group }

func (s natsSystem) join(ctx context.Context, group, id string, onMsg func([]byte)) (member, error) {
	nc, err := nats.Connect("ws://"+s.addr, nats.NoEcho(), nats.Name(id), nats.NoReconnect(),
		nats.Timeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	subj := natsSubject(group)
	if onMsg != nil {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) { onMsg(m.Data) })
		if err != nil {
			nc.Close()
			return nil, err
		}
		// The closed-loop workloads bound what is in flight themselves.
		_ = sub.SetPendingLimits(-1, -1)
	} else {
		// A sender is a member of its group like in wsproxy; NoEcho keeps
		// its own messages from coming back.
		if _, err := nc.Subscribe(subj, func(*nats.Msg) {}); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		nc.Close()
		return nil, err
	}
	return &natsMember{nc: nc, subject: subj}, nil
}

func (m *natsMember) send(p []byte) error { return m.nc.Publish(m.subject, p) }

func (m *natsMember) close() { m.nc.Close() }

// rawConn is a WebSocket client connection made by hand: the handshake and,
// for NATS, the CONNECT and SUB commands, and nothing else. The idle,
// handshake and slow-consumer workloads use it to hold thousands of
// connections, or one that never reads, at almost no cost to the generator.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

// rawDial opens a TCP connection from laddr (nil: any) to addr and performs
// the WebSocket handshake for path. It returns once the 101 response is read.
func rawDial(ctx context.Context, laddr *net.TCPAddr, addr, path string) (*rawConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if laddr != nil {
		d.LocalAddr = laddr
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wsKey +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	status, err := br.ReadSlice('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 101")) {
		c.Close()
		return nil, fmt.Errorf("handshake: %q", bytes.TrimSpace(status))
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			c.Close()
			return nil, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	return &rawConn{Conn: c, br: br}, nil
}

// writeFrame writes one masked, final frame (opcode 1 text, 2 binary).
func (c *rawConn) writeFrame(opcode byte, p []byte) error {
	hdr := make([]byte, 0, 14+len(p))
	hdr = append(hdr, 0x80|opcode)
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	hdr = append(hdr, key[:]...)
	for i, b := range p {
		hdr = append(hdr, b^key[i&3])
	}
	_, err := c.Write(hdr)
	return err
}

// readFrame reads one unmasked frame from the server.
func (c *rawConn) readFrame() (opcode byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint64(e[:]))
	}
	if n > 1<<20 {
		return 0, nil, errors.New("frame too large for rawConn")
	}
	p = make([]byte, n)
	_, err = io.ReadFull(c.br, p)
	return h[0] & 0x0f, p, err
}

// natsSubscribe sends CONNECT (no echo) and SUB for group over a raw
// connection to NATS, and waits for the PONG that confirms them.
func (c *rawConn) natsSubscribe(group string, sid int) error {
	cmd := `CONNECT {"verbose":false,"pedantic":false,"no_echo":true,"protocol":1}` + "\r\n" +
		"SUB " + natsSubject(group) + " " + strconv.Itoa(sid) + "\r\nPING\r\n"
	if err := c.writeFrame(1, []byte(cmd)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var seen []byte
	for !bytes.Contains(seen, []byte("PONG\r\n")) {
		_, p, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("nats subscribe: %w", err)
		}
		seen = append(seen, p...)
		if bytes.Contains(seen, []byte("-ERR")) {
			return fmt.Errorf("nats subscribe: %q", seen)
		}
	}
	return nil
}

// sourceAddrs spreads connections over several loopback source addresses,
// each with its own ephemeral port range.
var sourceAddrs = func() []*net.TCPAddr {
	var a []*net.TCPAddr
	for i := 2; i < 18; i++ {
		a = append(a, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))})
	}
	return a
}()

// rawPath is the request path for connection i of a workload.
func rawPath(sysName string, i, groupSize int) string {
	switch sysName {
	case "wsproxy":
		return "/ws?id=m" + strconv.Itoa(i) + "&groupName=g" + strconv.Itoa(i/groupSize)
	case "wsproxy-jwt": // groups of 2: see jwtTokens
		return "/ws?groupName=g" + strconv.Itoa(i/2) + "&token=" + jwtTokens[i]
	}
	return "/"
}

// closeAll closes conns in parallel.
func closeAll[C interface{ Close() error }](conns []C) {
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(conns); i += workers {
				_ = conns[i].Close()
			}
		}()
	}
	wg.Wait()
}
