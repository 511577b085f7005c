package hijack_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// countingConn counts what a *hijack.Conn does to a TCP socket: write
// deadlines set, and calls of the function it gives RawConn.Write (one per
// try at writing: the first, then one per wait for the socket).
type countingConn struct {
	*net.TCPConn
	deadlines atomic.Int64
	tries     atomic.Int64
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Add(1)
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *countingConn) SyscallConn() (syscall.RawConn, error) {
	raw, err := c.TCPConn.SyscallConn()
	return countingRaw{raw, &c.tries}, err
}

type countingRaw struct {
	syscall.RawConn
	tries *atomic.Int64
}

func (r countingRaw) Write(f func(uintptr) bool) error {
	return r.RawConn.Write(func(fd uintptr) bool {
		r.tries.Add(1)
		return f(fd)
	})
}

// bigFrame returns bufs holding one binary frame of n bytes, its payload
// patterned so that a reordering or a loss shows.
func bigFrame(n int) net.Buffers {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return net.Buffers{hijack.AppendHeader(nil, false, n), p}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// TestWriteStallFailsAfterOneTimeout: to a peer that reads nothing, a write
// fails about writeTimeout after the socket buffers fill (at most a quarter
// more, see hijack.Conn), not writeTimeout after a deadline moved when the
// last bytes went in (before: 3 s).
func TestWriteStallFailsAfterOneTimeout(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	s, _ := tcpPair(t)
	c := hijack.NewConn(s, timeout)
	bufs := net.Buffers{hijack.AppendHeader(nil, false, 64<<20), make([]byte, 64<<20)} // far more than the socket buffers
	total := len(bufs[0]) + len(bufs[1])
	start := time.Now()
	err := c.WriteFrames(&bufs)
	elapsed := time.Since(start)
	if !isTimeout(err) {
		t.Fatalf("write to a peer that reads nothing: %v, want a timeout", err)
	}
	left := len(bufs[0])
	if len(bufs) > 1 {
		left += len(bufs[1])
	}
	if left == total || left == 0 {
		t.Fatalf("%d of %d bytes left: the socket took none, or all", left, total)
	}
	t.Logf("failed after %v with %d bytes in the socket", elapsed, total-left)
	if elapsed < 900*time.Millisecond || elapsed > 1700*time.Millisecond {
		t.Fatalf("failed after %v, want about the %v timeout", elapsed, timeout)
	}
}

// TestWriteSlowPeerOverTCP: a peer that keeps reading, slowly, is given all
// the time it needs, many times the timeout, and gets every byte; the write
// deadline moves about five times per timeout (and four more at the start)
// while the socket wakes the writer much more often; and a write that
// completes at once tries once and sets the deadline once.
func TestWriteSlowPeerOverTCP(t *testing.T) {
	t.Parallel()
	// 1.5 s: the peer below reads every 10 ms, but a loaded machine may
	// starve it for much longer than that now and then.
	const timeout = 1500 * time.Millisecond
	s, peer := tcpPair(t)
	_ = s.SetWriteBuffer(64 << 10) // small buffers: the writer waits often
	_ = peer.SetReadBuffer(64 << 10)
	cc := &countingConn{TCPConn: s}
	c := hijack.NewConn(cc, timeout)

	bufs := bigFrame(100)
	if err := c.WriteFrames(&bufs); err != nil {
		t.Fatal(err)
	}
	if d, n := cc.deadlines.Load(), cc.tries.Load(); d != 1 || n != 1 {
		t.Fatalf("a write done at once: %d deadlines set, %d tries; want 1 and 1", d, n)
	}
	want := make([]byte, 100+2)
	if _, err := io.ReadFull(peer, want); err != nil {
		t.Fatal(err)
	}

	cc.deadlines.Store(0)
	cc.tries.Store(0)
	bufs = bigFrame(8 << 20)
	want = bytes.Join(bufs, nil)
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- c.WriteFrames(&bufs) }()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 16<<10)
	for len(got) < len(want) {
		time.Sleep(10 * time.Millisecond) // 16 KiB per 10 ms: 5 s in all
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatalf("peer read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := wait(t, errc); err != nil {
		t.Fatalf("write to a slow peer failed after %v: %v", time.Since(start), err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, want) {
		t.Fatal("the peer got other bytes than were written")
	}
	if elapsed < 2*timeout {
		t.Fatalf("the write took %v, not much longer than the %v timeout: the test proves nothing", elapsed, timeout)
	}
	deadlines, tries := cc.deadlines.Load(), cc.tries.Load()
	t.Logf("%v: %d deadlines set, %d tries", elapsed, deadlines, tries)
	most := int64(5*elapsed/timeout) + 6
	if deadlines > most {
		t.Errorf("%d deadlines set in %v, more than %d", deadlines, elapsed, most)
	}
	if tries <= 2*most {
		t.Errorf("only %d tries, where %d deadlines may be set: the test proves nothing", tries, most)
	}
}

// TestWriteFramesManyBuffers: more buffers than one writev takes (IOV_MAX),
// empty ones among them, arrive whole and in order, and bufs is consumed.
func TestWriteFramesManyBuffers(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 5*time.Second)
	var bufs net.Buffers
	for i := range 3000 {
		p := []byte{byte(i), byte(i >> 8), 0xee}
		bufs = append(bufs, hijack.AppendHeader(nil, false, len(p)), nil, p)
	}
	want := bytes.Join(bufs, nil)
	readc := make(chan error, 1)
	got := make([]byte, len(want))
	go func() {
		_, err := io.ReadFull(peer, got)
		readc <- err
	}()
	if err := c.WriteFrames(&bufs); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, readc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the peer got other bytes than were written")
	}
	if len(bufs) != 0 {
		t.Fatalf("%d buffers left after a write that succeeded", len(bufs))
	}
}

// TestWriteFramesConsumesWhatWasWritten: after a failed write, bufs holds
// exactly what the socket did not take.
func TestWriteFramesConsumesWhatWasWritten(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 200*time.Millisecond)
	bufs := bigFrame(16 << 20)
	want := bytes.Join(bufs, nil)
	if err := c.WriteFrames(&bufs); !isTimeout(err) {
		t.Fatalf("write to a peer that reads nothing: %v, want a timeout", err)
	}
	left := bytes.Join(bufs, nil)
	s.Close()
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if len(got)+len(left) != len(want) || !bytes.Equal(got, want[:len(got)]) || !bytes.Equal(left, want[len(got):]) {
		t.Fatalf("the peer got %d bytes and %d are left, of %d", len(got), len(left), len(want))
	}
}

// TestLimitWrites: a limit ends a write in progress even while the peer
// keeps reading, and fails later writes at once, on a TCP socket and on a
// net.Conn without syscall.Conn, with or without a write timeout.
func TestLimitWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tcp     bool
		timeout time.Duration
	}{
		{"tcp", true, time.Hour},
		{"tcp/no-timeout", true, 0},
		{"pipe", false, time.Hour},
		{"pipe/no-timeout", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			open := func() (*hijack.Conn, net.Conn) {
				if !tc.tcp {
					return pipe(t, tc.timeout)
				}
				s, p := tcpPair(t)
				return hijack.NewConn(s, tc.timeout), p
			}
			c, peer := open()
			c.LimitWrites(time.Now().Add(time.Hour)) // not reached: no effect
			bufs := net.Buffers{hijack.AppendHeader(nil, false, 64<<20), make([]byte, 64<<20)}
			errc := make(chan error, 1)
			go func() { errc <- c.WriteFrames(&bufs) }()
			// The peer keeps reading: the write progresses until the limit.
			reading := make(chan struct{})
			go func() {
				defer close(reading)
				buf := make([]byte, 4<<10)
				for {
					if _, err := peer.Read(buf); err != nil {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			const limit = 300 * time.Millisecond
			start := time.Now()
			c.LimitWrites(start.Add(limit))
			c.LimitWrites(start.Add(time.Hour)) // later than the first: ignored
			err := wait(t, errc)
			elapsed := time.Since(start)
			if !isTimeout(err) {
				t.Fatalf("write past the limit: %v, want a timeout", err)
			}
			if elapsed < limit || elapsed > limit+time.Second {
				t.Fatalf("the write failed %v after a limit %v away", elapsed, limit)
			}

			// The stream now ends mid-frame; a fresh write on a fresh
			// stream must fail too, without writing.
			c2, peer2 := open()
			past := time.Now().Add(-time.Millisecond)
			c2.LimitWrites(past)
			start = time.Now()
			if _, err := c2.Write([]byte{0x89, 0x00}); !isTimeout(err) {
				t.Fatalf("write after the limit: %v, want a timeout", err)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("a write after the limit took %v to fail", d)
			}
			_ = peer2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, _ := peer2.Read(make([]byte, 2)); n != 0 {
				t.Fatalf("the peer got %d bytes written after the limit", n)
			}
			peer.Close()
			<-reading
		})
	}
}

// TestNothingAfterAHalfFrame: once a write fails part-way through a frame,
// nothing more is written, even to a peer that reads again: every write
// fails with the error that cut the frame.
func TestNothingAfterAHalfFrame(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 200*time.Millisecond)
	bufs := net.Buffers{hijack.AppendHeader(nil, false, 64<<20), make([]byte, 64<<20)}
	if err := c.WriteFrames(&bufs); !isTimeout(err) {
		t.Fatalf("write to a peer that reads nothing: %v, want a timeout", err)
	}
	go io.Copy(io.Discard, peer) // reads again; ends when the test closes it
	if _, err := c.Write([]byte{0x89, 0x00}); !isTimeout(err) {
		t.Fatalf("the library's write after half a frame: %v, want the timeout again", err)
	}
	if err := c.WriteClose(1000, ""); !isTimeout(err) {
		t.Fatalf("WriteClose after half a frame: %v, want the timeout again", err)
	}
	bufs = net.Buffers{hijack.AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); !isTimeout(err) {
		t.Fatalf("WriteFrames after half a frame: %v, want the timeout again", err)
	}
}

// TestOnWriteStall: at a stall, the function OnWriteStall set is called
// once; if it sets a limit, the write goes on until that limit instead of
// failing, so a peer that was only pausing gets the whole frame; if it does
// not, the write fails at the stall as usual. On a TCP socket and on a
// net.Conn without syscall.Conn.
func TestOnWriteStall(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name         string
		tcp, limit   bool
		resume, fail bool // the peer reads again after the stall; the write fails
	}{
		{"tcp/resumes", true, true, true, false},
		{"tcp/limit-passes", true, true, false, true},
		{"tcp/no-limit", true, false, false, true},
		{"pipe/resumes", false, true, true, false},
		{"pipe/limit-passes", false, true, false, true},
		{"pipe/no-limit", false, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c *hijack.Conn
			var peer net.Conn
			if tc.tcp {
				s, p := tcpPair(t)
				c, peer = hijack.NewConn(s, timeout), p
			} else {
				c, peer = pipe(t, timeout)
			}
			const limit = time.Second
			var calls atomic.Int32
			stalls := make(chan time.Time, 1)
			c.OnWriteStall(func() {
				if calls.Add(1) == 1 {
					stalls <- time.Now()
				}
				if tc.limit {
					c.LimitWrites(time.Now().Add(limit))
				}
			})
			bufs := bigFrame(8 << 20)
			want := bytes.Join(bufs, nil)
			errc := make(chan error, 1)
			start := time.Now()
			go func() { errc <- c.WriteFrames(&bufs) }()
			if !tc.tcp {
				// The pipe holds nothing: take a little, then stall.
				if _, err := io.ReadFull(peer, make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
				want = want[100:]
			}
			stalled := wait(t, stalls)
			if d := stalled.Sub(start); d < timeout {
				t.Fatalf("stall reported %v after the write began, before the %v timeout", d, timeout)
			}
			readc := make(chan []byte, 1)
			if tc.resume {
				go func() {
					got, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
					readc <- got
				}()
			}
			err := wait(t, errc)
			switch {
			case tc.fail && !isTimeout(err):
				t.Fatalf("write: %v, want a timeout", err)
			case tc.fail && tc.limit && time.Since(stalled) < limit:
				t.Fatalf("the write failed %v after the stall, before the %v limit", time.Since(stalled), limit)
			case tc.fail && !tc.limit && time.Since(stalled) > limit/2:
				t.Fatalf("the write failed %v after the stall, not at it", time.Since(stalled))
			case !tc.fail && err != nil:
				t.Fatalf("write to a peer that resumed within the limit: %v", err)
			}
			if tc.resume {
				if got := wait(t, readc); !bytes.Equal(got, want) {
					t.Fatalf("the peer got %d bytes, not the %d written", len(got), len(want))
				}
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("the stall function was called %d times", n)
			}
		})
	}
}
