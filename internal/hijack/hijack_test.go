package hijack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipe returns a *hijack.Conn over one end of a net.Pipe and the other end,
// which the test reads and writes as the peer. net.Pipe has no buffer: a Write
// makes progress exactly as fast as the peer reads. Nor has it syscall.Conn:
// writes take the path for such conns (see hijack.Conn); tcpPair gives the
// other.
func pipe(t *testing.T, writeTimeout time.Duration) (*hijack.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	// A broken Conn must fail the test, not hang it.
	_ = b.SetDeadline(time.Now().Add(10 * time.Second))
	return hijack.NewConn(a, writeTimeout), b
}

type writeResult struct {
	n       int
	err     error
	elapsed time.Duration
}

func goWrite(c net.Conn, p []byte) <-chan writeResult {
	ch := make(chan writeResult, 1)
	go func() {
		start := time.Now()
		n, err := c.Write(p)
		ch <- writeResult{n, err, time.Since(start)}
	}()
	return ch
}

func await(t *testing.T, ch <-chan writeResult) writeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Write did not return")
		return writeResult{}
	}
}

func TestReadFailed(t *testing.T) {
	t.Parallel()
	c, peer := pipe(t, 0)
	go func() {
		peer.Write([]byte("hi"))
		peer.Close()
	}()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if c.ReadFailed() {
		t.Fatal("ReadFailed after a successful read")
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read after peer closed: %v, want EOF", err)
	}
	if !c.ReadFailed() {
		t.Fatal("ReadFailed is false after EOF")
	}
	if !c.ReadFailed() {
		t.Fatal("ReadFailed did not stay true")
	}
}

func TestReadFailedOnDeadline(t *testing.T) {
	t.Parallel()
	c, _ := pipe(t, 0)
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	if !c.ReadFailed() {
		t.Error("ReadFailed is false after a failed read")
	}
}

// TestWriteTimeoutStalled: a peer that accepts nothing fails the write once
// the timeout has passed, with a timeout error.
func TestWriteTimeoutStalled(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	c, _ := pipe(t, timeout)
	r := await(t, goWrite(c, []byte("never read")))
	var ne net.Error
	if !errors.As(r.err, &ne) || !ne.Timeout() {
		t.Fatalf("Write to a stalled peer: n=%d err=%v, want a timeout", r.n, r.err)
	}
	if r.n != 0 {
		t.Errorf("n = %d, want 0", r.n)
	}
	if r.elapsed < timeout {
		t.Errorf("failed after %v, before the %v timeout", r.elapsed, timeout)
	}
}

// TestWriteTimeoutStallsAfterProgress: a peer that reads some bytes, then
// stops, fails the write; the bytes it took are counted.
func TestWriteTimeoutStallsAfterProgress(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	c, peer := pipe(t, timeout)
	ch := goWrite(c, []byte("0123456789"))
	if _, err := io.ReadFull(peer, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	stalledAt := time.Now()
	r := await(t, ch)
	var ne net.Error
	if !errors.As(r.err, &ne) || !ne.Timeout() {
		t.Fatalf("Write to a peer that stopped reading: n=%d err=%v, want a timeout", r.n, r.err)
	}
	if r.n != 3 {
		t.Errorf("n = %d, want the 3 bytes the peer read", r.n)
	}
	if d := time.Since(stalledAt); d < timeout {
		t.Errorf("failed %v after the last progress, before the %v timeout", d, timeout)
	}
}

// TestWriteTimeoutSlowButProgressing: a peer that takes much longer than the
// timeout for the whole write, but never stalls for the timeout, gets all of
// it.
func TestWriteTimeoutSlowButProgressing(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	c, peer := pipe(t, timeout)
	msg := []byte(strings.Repeat("x", 40))
	ch := goWrite(c, msg)
	got := make([]byte, 0, len(msg))
	for len(got) < len(msg) {
		time.Sleep(10 * time.Millisecond) // 40 x 10 ms: twice the timeout in all
		select {
		case r := <-ch:
			t.Fatalf("the write ended after %d of %d bytes: n=%d err=%v", len(got), len(msg), r.n, r.err)
		default:
		}
		b := make([]byte, 1)
		if _, err := peer.Read(b); err != nil {
			t.Fatalf("peer read: %v", err)
		}
		got = append(got, b...)
	}
	r := await(t, ch)
	if r.err != nil || r.n != len(msg) {
		t.Fatalf("slow write: n=%d err=%v, want %d bytes", r.n, r.err, len(msg))
	}
	if r.elapsed <= timeout {
		t.Fatalf("the write took %v, not longer than the %v timeout: the test proves nothing", r.elapsed, timeout)
	}
	if string(got) != string(msg) {
		t.Errorf("peer got %q", got)
	}
}

// TestNoWriteTimeout: with timeout 0 a write waits as long as the peer does.
func TestNoWriteTimeout(t *testing.T) {
	t.Parallel()
	c, peer := pipe(t, 0)
	ch := goWrite(c, []byte("late"))
	time.Sleep(50 * time.Millisecond) // longer than the other tests' timeouts
	if _, err := io.ReadFull(peer, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if r := await(t, ch); r.err != nil || r.n != 4 {
		t.Fatalf("write: n=%d err=%v", r.n, r.err)
	}
}

// TestAbortWrites: AbortWrites fails the write in progress at once (long
// before any timeout) and every later write, and leaves reads alone.
func TestAbortWrites(t *testing.T) {
	t.Parallel()
	for _, timeout := range []time.Duration{0, time.Hour} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			t.Parallel()
			c, peer := pipe(t, timeout)
			ch := goWrite(c, make([]byte, 1<<20))
			// The peer taking one byte proves the write is in progress.
			if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			c.AbortWrites()
			r := await(t, ch)
			if !errors.Is(r.err, hijack.ErrWritesAborted) {
				t.Fatalf("write in progress after AbortWrites: n=%d err=%v, want ErrWritesAborted", r.n, r.err)
			}
			if r.n != 1 {
				t.Errorf("n = %d, want the 1 byte the peer read", r.n)
			}

			// No reader: a write that tried would block forever.
			r = await(t, goWrite(c, []byte("more")))
			if !errors.Is(r.err, hijack.ErrWritesAborted) || r.n != 0 {
				t.Fatalf("write after AbortWrites: n=%d err=%v, want 0, ErrWritesAborted", r.n, r.err)
			}

			go peer.Write([]byte("still readable"))
			buf := make([]byte, len("still readable"))
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("read after AbortWrites: %v", err)
			}
			if c.ReadFailed() {
				t.Error("AbortWrites made ReadFailed true")
			}
		})
	}
}

// TestResponseWriter checks that a WebSocket accepted through ResponseWriter
// reads and writes through the *Conn it hands out: AbortWrites fails the
// library's writes, and a client hanging up sets ReadFailed.
func TestResponseWriter(t *testing.T) {
	t.Parallel()
	type result struct {
		echoErr, abortedErr error
		readFailedBefore    bool
		readFailedAfter     bool
		nilBeforeHijack     bool
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res result
		defer func() { results <- res }()
		hw := hijack.NewResponseWriter(w, time.Second)
		res.nilBeforeHijack = hw.Conn() == nil
		c, err := websocket.Accept(hw, r, nil)
		if err != nil {
			res.echoErr = err
			return
		}
		defer c.CloseNow()
		nc := hw.Conn()
		ctx := context.Background()
		typ, b, err := c.Read(ctx)
		if err == nil {
			err = c.Write(ctx, typ, b)
		}
		res.echoErr = err
		res.readFailedBefore = nc.ReadFailed()
		nc.AbortWrites()
		res.abortedErr = c.Write(ctx, websocket.MessageText, []byte("after abort"))
		_, _, _ = c.Read(ctx) // until the client hangs up
		res.readFailedAfter = nc.ReadFailed()
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("echo")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "echo" {
		t.Fatalf("echo: %q, %v", b, err)
	}
	c.CloseNow()

	var res result
	select {
	case res = <-results:
	case <-ctx.Done():
		t.Fatal("handler did not finish")
	}
	if !res.nilBeforeHijack {
		t.Error("Conn() was not nil before Hijack")
	}
	if res.echoErr != nil {
		t.Fatalf("echo on the server: %v", res.echoErr)
	}
	if res.readFailedBefore {
		t.Error("ReadFailed was true while the client was connected")
	}
	if !errors.Is(res.abortedErr, hijack.ErrWritesAborted) {
		t.Errorf("library write after AbortWrites: %v, want ErrWritesAborted: writes do not go through the Conn", res.abortedErr)
	}
	if !res.readFailedAfter {
		t.Error("ReadFailed is false after the client hung up: reads do not go through the Conn")
	}
}
