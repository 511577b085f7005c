package faultproxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain fails the package if a goroutine outlives its tests.
func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitFor is how long a test waits for something that must happen.
const waitFor = 10 * time.Second

// stall is how long a test waits for something that must not happen: bytes
// that would be forwarded arrive within microseconds, so a wrong pass shows.
const stall = 500 * time.Millisecond

// target is a server whose accepted connections the test holds: the server
// side of each proxied connection, to read and write directly.
type target struct {
	ln    net.Listener
	conns chan net.Conn
}

func newTarget(t *testing.T) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.conns <- c
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(tg.conns)
		for c := range tg.conns {
			c.Close()
		}
	})
	return tg
}

// dial connects to the proxy and returns the client's side and, once the
// proxy has connected to the target, the target's side.
func (tg *target) dial(t *testing.T, p *Proxy) (client, server net.Conn) {
	t.Helper()
	client = dialProxy(t, p)
	select {
	case server = <-tg.conns:
	case <-time.After(waitFor):
		t.Fatal("the proxy never connected to the target")
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip proves that bytes go both ways between client and server.
func roundTrip(t *testing.T, client, server net.Conn, msg string) {
	t.Helper()
	send(t, client, server, msg)
	send(t, server, client, msg)
}

// send writes msg on from and expects exactly it on to.
func send(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	expect(t, to, msg)
}

func expect(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("read %q, want %q", got, msg)
	}
}

// silent fails unless nothing arrives on c for stall.
func silent(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(stall))
	var b [1]byte
	n, err := c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v; want nothing until the deadline", n, err)
	}
}

// broken fails unless c's next read ends it by a reset.
func broken(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read until the end: %v; want a connection reset", err)
	}
}

func poll(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Both directions carry large random payloads byte-exactly and at once; a
// half-close reaches the other side; the counters and Conns follow.
func TestForwardsExactly(t *testing.T) {
	tg := newTarget(t)
	p := New(t, tg.ln.Addr().String())
	client, server := tg.dial(t, p)
	poll(t, "Conns() 1", func() bool { return p.Conns() == 1 })

	const size = 4<<20 + 7
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	var wg sync.WaitGroup
	var upGot, downGot []byte
	var upErr, downErr error
	wg.Go(func() { upGot, upErr = io.ReadAll(server) })
	wg.Go(func() { downGot, downErr = io.ReadAll(client) })
	wg.Go(func() {
		client.Write(up)
		client.(*net.TCPConn).CloseWrite()
	})
	wg.Go(func() {
		server.Write(down)
		server.(*net.TCPConn).CloseWrite()
	})
	wg.Wait()
	if upErr != nil || !bytes.Equal(upGot, up) {
		t.Errorf("client to server: %d of %d bytes, equal %v, %v", len(upGot), size, bytes.Equal(upGot, up), upErr)
	}
	if downErr != nil || !bytes.Equal(downGot, down) {
		t.Errorf("server to client: %d of %d bytes, equal %v, %v", len(downGot), size, bytes.Equal(downGot, down), downErr)
	}
	if u, d := p.Bytes(); u != size || d != size {
		t.Errorf("Bytes() = %d, %d; want %d each way", u, d, size)
	}
	poll(t, "Conns() 0 after both sides closed", func() bool { return p.Conns() == 0 })
}

// Cut resets every connection and each new one until Pass, which heals.
func TestCut(t *testing.T) {
	tg := newTarget(t)
	p := New(t, tg.ln.Addr().String())
	c1, s1 := tg.dial(t, p)
	c2, s2 := tg.dial(t, p)
	roundTrip(t, c1, s1, "before")

	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d after Cut", n)
	}
	broken(t, c1)
	broken(t, s1)
	broken(t, c2)
	broken(t, s2)

	for range 3 { // refused, however often: at connect, or just after
		c, err := net.DialTimeout("tcp", p.Addr(), waitFor)
		if err != nil {
			continue // reset before connect returned (seen under load)
		}
		broken(t, c)
		c.Close()
	}
	select {
	case s := <-tg.conns:
		s.Close()
		t.Error("the proxy connected to the target while cut")
	default:
	}

	p.Pass()
	c3, s3 := tg.dial(t, p)
	roundTrip(t, c3, s3, "healed")
}

// Blackhole stalls both directions of existing and new connections without
// closing them; Pass delivers what was held, in order.
func TestBlackhole(t *testing.T) {
	tg := newTarget(t)
	p := New(t, tg.ln.Addr().String())
	c1, s1 := tg.dial(t, p)
	roundTrip(t, c1, s1, "before")
	// A chunk is counted just after it is written: the peer may have read
	// it a moment before.
	deadline := time.Now().Add(waitFor)
	for u, d := p.Bytes(); (u < 6 || d < 6) && time.Now().Before(deadline); u, d = p.Bytes() {
		time.Sleep(time.Millisecond)
	}
	upBefore, downBefore := p.Bytes()

	p.Blackhole()
	c1.Write([]byte("up-1"))
	s1.Write([]byte("down-1"))
	silent(t, s1)
	silent(t, c1)
	c2, s2 := tg.dial(t, p) // accepted, connected, silent
	c2.Write([]byte("up-2"))
	s2.Write([]byte("down-2"))
	silent(t, s2)
	silent(t, c2)
	c1.Write([]byte("+more"))
	if u, d := p.Bytes(); u != upBefore || d != downBefore {
		t.Errorf("Bytes() moved from %d, %d to %d, %d while blackholed", upBefore, downBefore, u, d)
	}
	if n := p.Conns(); n != 2 {
		t.Errorf("Conns() = %d, want the 2 held connections", n)
	}

	p.Pass()
	expect(t, s1, "up-1+more")
	expect(t, c1, "down-1")
	expect(t, s2, "up-2")
	expect(t, c2, "down-2")
	roundTrip(t, c1, s1, "after")
	c3, s3 := tg.dial(t, p)
	roundTrip(t, c3, s3, "new")
}

// Cut also ends connections held by Blackhole.
func TestCutWhileBlackholed(t *testing.T) {
	tg := newTarget(t)
	p := New(t, tg.ln.Addr().String())
	c, s := tg.dial(t, p)
	p.Blackhole()
	c.Write([]byte("held"))
	silent(t, s)
	p.Cut()
	broken(t, c)
	broken(t, s)
	poll(t, "Conns() 0", func() bool { return p.Conns() == 0 })
}

// Delay holds each chunk back by at least d, then forwards it.
func TestDelay(t *testing.T) {
	tg := newTarget(t)
	p := New(t, tg.ln.Addr().String())
	c, s := tg.dial(t, p)
	const d = 300 * time.Millisecond
	p.Delay(d)
	start := time.Now()
	send(t, c, s, "slow up")
	send(t, s, c, "slow down")
	if took := time.Since(start); took < 2*d {
		t.Errorf("two delayed chunks took %v, want at least %v", took, 2*d)
	}
	p.Pass()
	start = time.Now()
	roundTrip(t, c, s, "fast")
	if took := time.Since(start); took >= d {
		t.Logf("undelayed round trip took %v (a loaded machine?)", took)
	}
}

// cleanupTB runs the cleanups New registers when the test asks, not when it
// ends.
type cleanupTB struct {
	testing.TB
	cleanups []func()
}

func (c *cleanupTB) Cleanup(f func()) { c.cleanups = append(c.cleanups, f) }

// The end of the test closes every connection, even those Blackhole holds,
// and waits for all of the proxy's goroutines.
func TestCleanupWhileBlackholed(t *testing.T) {
	tg := newTarget(t)
	tb := &cleanupTB{TB: t}
	p := New(tb, tg.ln.Addr().String())
	c, s := tg.dial(t, p)
	p.Blackhole()
	c.Write([]byte("held up"))
	s.Write([]byte("held down"))
	silent(t, s)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, f := range tb.cleanups {
			f()
		}
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatalf("the proxy's cleanup has not returned after %v", waitFor)
	}
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d after cleanup", n)
	}
	c.SetReadDeadline(time.Now().Add(waitFor))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client read %d bytes, %v after cleanup; want its end", n, err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after cleanup")
	}
}
