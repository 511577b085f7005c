// Package faultproxy is a TCP proxy for tests that puts faults between a
// client and its server: it cuts connections, blackholes them, or delays
// them, and heals them again, at any moment, for the connections it already
// carries as well as for new ones. Between a NATS client and its server:
//
//	p := faultproxy.New(t, nats.Addr())
//	nc, _ := nats.Connect(p.URL())
//	p.Cut()  // nc is disconnected, and cannot reconnect...
//	p.Pass() // ...until now
package faultproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bufSize is the largest chunk one direction of a connection reads, holds
// and writes at a time.
const bufSize = 32 << 10

// dialTimeout bounds the connection to the target.
const dialTimeout = 5 * time.Second

type mode int

const (
	pass mode = iota
	blackhole
	cut
	closed // the test ended
)

// Proxy accepts connections on a loopback address and forwards each, both
// ways, to one target. Every method may be called concurrently, and a mode
// set by Pass, Delay, Cut or Blackhole holds until the next one.
type Proxy struct {
	// Static after New.
	target string
	ln     net.Listener
	ctx    context.Context // cancelled when the test ends
	cancel context.CancelFunc

	// Every goroutine the proxy starts; the test's cleanup waits for them.
	wg sync.WaitGroup

	up   atomic.Int64 // bytes written to the target
	down atomic.Int64 // bytes written to the clients

	// Guarded by mu.
	mu      sync.Mutex
	mode    mode
	delay   time.Duration
	changed chan struct{} // closed, and replaced, at every change of mode or delay
	links   map[*link]struct{}
}

// New listens on 127.0.0.1 at a random port and forwards every connection it
// accepts to target (host:port), starting in Pass mode. When the test ends,
// the listener and every connection are closed, and every goroutine of the
// proxy has returned before the cleanup does.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		changed: make(chan struct{}),
		links:   make(map[*link]struct{}),
	}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port, where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is "nats://" + Addr(), for a NATS client.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// Conns is the number of connections the proxy carries now: accepted,
// connected to the target, and not yet closed in both directions.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Bytes reports how many bytes the proxy has written so far to the target
// (up) and to its clients (down), over every connection.
func (p *Proxy) Bytes() (up, down int64) { return p.up.Load(), p.down.Load() }

// Pass forwards everything again, without delay: connections held by
// Blackhole resume (what they read meanwhile is delivered, in order), and new
// connections are accepted and forwarded.
func (p *Proxy) Pass() { p.set(pass, 0) }

// Delay forwards everything, but each chunk read waits d before it is
// written. A direction reads its next chunk only once it has written the
// last, so Delay also caps each direction at one chunk (32 KiB) per d.
func (p *Proxy) Delay(d time.Duration) { p.set(pass, d) }

// Cut resets every connection (both sides see a TCP RST), and until another
// mode is set resets each new connection as soon as it is accepted, without
// connecting it to the target. Cut returns after the current connections
// are closed.
func (p *Proxy) Cut() {
	p.set(cut, 0)
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.close(true)
		delete(p.links, l)
	}
}

// Blackhole stops forwarding in both directions without closing anything,
// as a network that drops every packet does: each direction of a connection
// holds the chunk it has read, reads no more (so TCP flow control soon stops
// the sender), and writes nothing until the next Pass or Delay, which
// delivers what was held. Connections accepted meanwhile are connected to
// the target and held the same way. A chunk whose write had already begun
// when Blackhole was called may still arrive.
func (p *Proxy) Blackhole() { p.set(blackhole, 0) }

// set changes the mode and wakes every goroutine waiting on the old one.
func (p *Proxy) set(m mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == closed {
		return
	}
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

// state is the current mode and delay, and a channel closed when they change.
func (p *Proxy) state() (mode, time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed
}

// close ends the proxy: no more connections, every one closed, every
// goroutine returned.
func (p *Proxy) close() {
	p.mu.Lock()
	p.mode = closed
	close(p.changed) // wakes the held directions
	p.changed = make(chan struct{})
	for l := range p.links {
		l.close(false)
	}
	p.mu.Unlock()
	p.cancel() // stops dials in progress
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (too many open files, say): try again.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if m, _, _ := p.state(); m == cut || m == closed {
			reset(c)
			continue
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve connects client c to the target and forwards both ways until both
// directions have ended.
func (p *Proxy) serve(c net.Conn) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	t, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		reset(c)
		return
	}
	l := &link{client: c, target: t, done: make(chan struct{})}
	p.mu.Lock()
	if p.mode == cut || p.mode == closed {
		p.mu.Unlock()
		l.close(true)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var dirs sync.WaitGroup
	dirs.Go(func() { p.forward(l, c, t, &p.up) })
	dirs.Go(func() { p.forward(l, t, c, &p.down) })
	dirs.Wait()
	l.close(false)
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// forward copies src to dst chunk by chunk, each chunk when the mode lets it
// through, and counts what it writes in n. At src's end it half-closes dst,
// so the other direction can finish; on any error it closes the link.
func (p *Proxy) forward(l *link, src, dst net.Conn, n *atomic.Int64) {
	buf := make([]byte, bufSize)
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if !p.await(l, time.Now()) {
				return
			}
			w, werr := dst.Write(buf[:k])
			n.Add(int64(w))
			if werr != nil {
				l.close(false)
				return
			}
		}
		if rerr == io.EOF {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if cw.CloseWrite() == nil {
					return
				}
			}
			l.close(false)
			return
		}
		if rerr != nil {
			l.close(false)
			return
		}
	}
}

// await waits until a chunk read at time read may be written: the mode is
// pass and the delay since read has passed. It reports false, having closed
// the link, if the chunk is to be dropped: the link is closed, or the proxy
// cut or closed.
func (p *Proxy) await(l *link, read time.Time) bool {
	for {
		m, d, changed := p.state()
		var timer *time.Timer
		var wait <-chan time.Time // nil: wait for a change of mode
		switch m {
		case pass:
			left := time.Until(read.Add(d))
			if left <= 0 {
				return true
			}
			timer = time.NewTimer(left)
			wait = timer.C
		case blackhole:
		default:
			l.close(m == cut)
			return false
		}
		var gone bool
		select {
		case <-wait:
		case <-changed:
		case <-l.done:
			gone = true
		}
		if timer != nil {
			timer.Stop()
		}
		if gone {
			return false
		}
	}
}

// link is one proxied connection: the client's side and the target's.
type link struct {
	client, target net.Conn
	once           sync.Once
	done           chan struct{} // closed by close
}

// close closes both sides once; with rst, each side gets a TCP reset.
func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.done)
		if rst {
			reset(l.client)
			reset(l.target)
			return
		}
		l.client.Close()
		l.target.Close()
	})
}

// reset closes c so that its peer sees a TCP reset rather than an orderly end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
