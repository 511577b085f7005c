package hijack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

var (
	// ErrWritesAborted is returned by every write after AbortWrites.
	ErrWritesAborted = errors.New("writes aborted")
	// ErrCloseSent is returned by WriteFrames and WriteClose once a close
	// frame has started going out: no frame may follow it (RFC 6455 section
	// 5.5.1).
	ErrCloseSent = errors.New("close frame already sent")
	// ErrMidFrame is returned by WriteFrames and WriteClose called while a
	// frame the library writes is incomplete: a bug in the caller.
	ErrMidFrame = errors.New("frames written in the middle of another frame")
)

// A blocked write on a syscall.Conn probes for room the kernel has not
// reported writeTimeout/firstProbe after it began, then at intervals that
// double up to writeTimeout/probes: room often appears soon after the
// socket fills, when the peer's delayed acknowledgment arrives.
const (
	firstProbe = 64
	probes     = 4
)

// maxIOV is the most buffers one writev takes (Linux's IOV_MAX), and maxIO
// the most bytes Conn hands one system call for one buffer (as package
// net does on stream sockets).
const (
	maxIOV = 1024
	maxIO  = 1 << 30
)

// Write writes p, the WebSocket library's output, all of it unless it fails
// (see Conn for when).
//
// Once a close frame, the library's or WriteClose's, has started going out,
// Write writes nothing and reports all of p written: nothing may follow a
// close frame, and the library, which writes its own close frame even after
// WriteClose's, must see it succeed to go on to wait for the peer's. For the
// same reason Write writes nothing of p past the end of a close frame.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.out.closeStarted:
		return len(p), nil
	case c.torn != nil:
		return 0, c.torn
	}
	s := c.out
	k := s.scan(p)
	c.one[0] = p[:k]
	n, err := c.writeBufs(c.one[:])
	c.one[0] = nil
	if n == int64(k) {
		c.out = s
	} else {
		c.out.scan(p[:n])
	}
	c.wrote(err)
	if err != nil {
		return int(n), err
	}
	return len(p), nil
}

// WriteFrames writes bufs, which hold whole WebSocket frames (data frames:
// whole messages, or fragments of one), in as few system calls as the socket
// allows, bounded in time like any write (see Conn). bufs is consumed as it
// is written, as by net.Buffers.WriteTo.
//
// The library writes its own frames through Write under its frame lock:
// control frames whole in one call, the frames of a message written through
// it possibly in pieces. WriteFrames holds the same socket lock as Write, so
// its frames never land inside one of the library's frames as long as the
// library is between frames, which it checks (ErrMidFrame);
// and it refuses to write once a close frame has started going out
// (ErrCloseSent). The caller must be the connection's only writer of data
// frames, must not call WriteFrames while a message it writes through the
// library is unfinished, and must not interleave two messages' fragments.
func (c *Conn) WriteFrames(bufs *net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.frameBoundary(); err != nil {
		return err
	}
	n, err := c.writeBufs(*bufs)
	if err != nil && n > 0 {
		// Whole frames leave the stream at a boundary; a part may not.
		left := n
		for _, b := range *bufs {
			k := min(left, int64(len(b)))
			c.out.scan(b[:k])
			if left -= k; left == 0 {
				break
			}
		}
		c.wrote(err)
	}
	consume(bufs, n)
	return err
}

// WriteClose writes one close frame with code and reason (at most 123
// bytes), bounded in time like any write (see Conn). It writes nothing and
// returns ErrCloseSent if a close frame, the library's or its own, has
// started going out, and ErrMidFrame unless the stream is between frames.
// After it, the library's own close frame is dropped (see Write).
func (c *Conn) WriteClose(code uint16, reason string) error {
	if len(reason) > maxCloseReason {
		return fmt.Errorf("write close: reason of %d bytes, more than %d", len(reason), maxCloseReason)
	}
	frame := make([]byte, 4, 4+len(reason))
	frame[0], frame[1], frame[2], frame[3] = finBit|opClose, byte(2+len(reason)), byte(code>>8), byte(code)
	frame = append(frame, reason...)

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.frameBoundary(); err != nil {
		return err
	}
	c.one[0] = frame
	n, err := c.writeBufs(c.one[:])
	c.one[0] = nil
	c.out.scan(frame[:n])
	c.wrote(err)
	return err
}

// CloseSent reports whether a close frame, the library's or WriteClose's, has
// reached the socket whole: all its bytes accepted by the kernel.
func (c *Conn) CloseSent() bool { return c.closeSent.Load() }

// OnWriteStall sets f, called the first time a write meets the progress rule
// (the socket has accepted none of its bytes for writeTimeout; see Conn),
// once per Conn. f runs on the writing goroutine with the socket lock held:
// it must not write, but it may call LimitWrites; if a limit is then set,
// this write and later ones are not failed by the progress rule but go on
// until the limit. This is how an evicted receiver's frame in progress is
// finished: the stall is what evicts it. Call OnWriteStall before the first
// write.
func (c *Conn) OnWriteStall(f func()) { c.onStall = f }

// pastStall is called when a write meets the progress rule: it calls
// onStall the first time, and reports whether the write may go on, under a
// limit (with onStall set). c.wmu is held; c.mu is not.
func (c *Conn) pastStall() bool {
	if c.onStall == nil {
		return false
	}
	if !c.stalled {
		c.stalled = true
		c.onStall()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.limit.IsZero()
}

// LimitWrites bounds the write in progress and every later write: each must
// be done by deadline, whatever progress the peer makes; once it has passed,
// writes fail with a timeout error. Of several limits the earliest holds; a
// zero deadline is ignored. Reads are not affected.
func (c *Conn) LimitWrites(deadline time.Time) {
	if deadline.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.limit.IsZero() && !deadline.Before(c.limit) {
		return
	}
	c.limit = deadline
	if c.deadline.IsZero() || deadline.Before(c.deadline) {
		c.deadline = deadline
		_ = c.Conn.SetWriteDeadline(deadline)
	}
}

// AbortWrites makes the write in progress, and every later write, fail at
// once with ErrWritesAborted. Reads are not affected.
func (c *Conn) AbortWrites() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.deadline = time.Unix(1, 0)
	_ = c.Conn.SetWriteDeadline(c.deadline)
}

func (c *Conn) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// frameBoundary returns nil if a frame may be written now, at a boundary
// between frames. c.wmu is held.
func (c *Conn) frameBoundary() error {
	switch {
	case c.out.closeStarted:
		return ErrCloseSent
	case c.torn != nil:
		return c.torn
	case !c.out.atBoundary():
		if c.isAborted() {
			return ErrWritesAborted // the frame will never be finished
		}
		return ErrMidFrame
	}
	return nil
}

// wrote notes the end of a write whose accepted bytes c.out has scanned.
// c.wmu is held.
func (c *Conn) wrote(err error) {
	if c.out.closeWhole {
		c.closeSent.Store(true)
	}
	if err != nil && !c.out.atBoundary() {
		c.torn = err
	}
}

// writeBufs writes bufs to the socket, bounded as Conn says, and
// returns how many bytes the socket accepted. It does not change bufs.
// c.wmu is held.
func (c *Conn) writeBufs(bufs [][]byte) (int64, error) {
	since, err := c.startWrite()
	if err != nil {
		return 0, err
	}
	c.bufs, c.bi, c.off, c.done, c.since, c.moved = bufs, 0, 0, 0, since, false
	if c.raw != nil {
		err = c.writeRaw()
	} else {
		err = c.writeConn()
	}
	n := c.done
	c.bufs, c.werr = nil, nil
	clear(c.iov[:c.iovN]) // keep no caller's buffer alive
	c.iovN = 0
	return n, err
}

// startWrite sets the write deadline for a write beginning now (the next
// probe or, without syscall.Conn, writeTimeout from now; or the limit if
// sooner), and returns now (zero without a write timeout).
func (c *Conn) startWrite() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return time.Time{}, ErrWritesAborted
	}
	var now, dl time.Time
	if c.writeTimeout > 0 {
		now = time.Now()
		if c.raw != nil {
			c.step = c.writeTimeout / firstProbe
			dl = now.Add(c.step)
		} else {
			dl = now.Add(c.writeTimeout)
		}
	}
	if dl = earliest(dl, c.limit); !dl.Equal(c.deadline) {
		c.deadline = dl
		_ = c.Conn.SetWriteDeadline(dl)
	}
	return now, nil
}

// rearm is called when a wait for the socket met the write deadline. It
// returns err if the limit has passed (ErrWritesAborted after AbortWrites).
// Otherwise it sets the deadline for the next wait and returns nil: for a
// syscall.Conn, the next probe or the moment writeTimeout will have passed
// since the last progress, whichever is sooner (the caller then probes, see
// writeFD); for any other net.Conn, writeTimeout after the last progress,
// or err if that has passed, or only the limit past a stall (see
// OnWriteStall). The limit comes first if sooner. c.wmu is held.
func (c *Conn) rearm(err error) error {
	// A syscall.Conn's probe applies the progress rule (writeFD); here,
	// for any other net.Conn.
	limitOnly := c.raw == nil && c.writeTimeout > 0 &&
		!time.Now().Before(c.since.Add(c.writeTimeout)) && c.pastStall()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return ErrWritesAborted
	}
	now := time.Now()
	var dl time.Time
	if c.writeTimeout > 0 {
		stall := c.since.Add(c.writeTimeout)
		switch {
		case limitOnly:
		case c.raw == nil:
			dl = stall
		default:
			c.step = min(2*c.step, c.writeTimeout/probes)
			dl = now.Add(c.step)
			if stall.After(now) { // else the probe decides
				dl = earliest(stall, dl)
			}
		}
	}
	dl = earliest(dl, c.limit)
	if dl.IsZero() || !now.Before(dl) {
		return err // past the limit or the progress rule's moment, or a deadline Conn did not set
	}
	c.deadline = dl
	_ = c.Conn.SetWriteDeadline(dl)
	return nil
}

// earliest returns the earlier of two moments, where zero means none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// writeRaw writes c.bufs with system calls that never block, letting the
// runtime wait for the socket to take more. c.wmu is held.
func (c *Conn) writeRaw() error {
	for {
		err := c.raw.Write(c.rawWrite)
		c.probe = false
		if err == nil {
			if c.werr == nil {
				return nil
			}
			err = &net.OpError{Op: "write", Net: c.LocalAddr().Network(),
				Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: c.werr}
		} else if oe, ok := err.(*net.OpError); ok && oe.Op == "raw-write" {
			oe.Op = "write"
		}
		if c.werr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if err = c.rearm(err); err == nil {
				c.probe = true
				continue
			}
		}
		if c.isAborted() {
			return ErrWritesAborted // not the error the abort caused
		}
		return err
	}
}

// writeFD writes what is left of c.bufs to fd without waiting, and reports
// whether it is done: all written, or failed (c.werr). It returns false, to
// have the runtime wait until fd is writable, when the socket takes no more;
// unless the call is a probe (c.probe) that finds writeTimeout has passed
// since the last progress: the write then fails.
func (c *Conn) writeFD(fd uintptr) bool {
	for c.bi < len(c.bufs) {
		if c.off == len(c.bufs[c.bi]) {
			c.bi, c.off = c.bi+1, 0
			continue
		}
		var n uintptr
		var e syscall.Errno
		call := "write"
		if c.bi == len(c.bufs)-1 {
			b := c.bufs[c.bi][c.off:]
			n, _, e = syscall.Syscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(min(len(b), maxIO)))
		} else {
			iov := c.iov[:0]
			for i := c.bi; i < len(c.bufs) && len(iov) < maxIOV; i++ {
				b := c.bufs[i]
				if i == c.bi {
					b = b[c.off:]
				}
				if len(b) == 0 {
					continue
				}
				iov = append(iov, syscall.Iovec{Base: &b[0]})
				iov[len(iov)-1].SetLen(min(len(b), maxIO))
				if len(b) > maxIO {
					break
				}
			}
			c.iov, c.iovN = iov, max(c.iovN, len(iov))
			call = "writev"
			n, _, e = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		}
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			if c.moved {
				c.since, c.moved = time.Now(), false
			}
			if c.probe {
				c.probe = false
				if c.writeTimeout > 0 && time.Since(c.since) >= c.writeTimeout && !c.pastStall() {
					c.werr = os.ErrDeadlineExceeded // the progress rule
					return true
				}
			}
			return false
		case e != 0:
			c.werr = os.NewSyscallError(call, e)
			return true
		case n == 0:
			c.werr = io.ErrShortWrite
			return true
		}
		c.advance(int64(n))
	}
	return true
}

// advance moves the write in progress on by n bytes the socket accepted.
func (c *Conn) advance(n int64) {
	c.bytesOut.Add(n)
	c.done += n
	c.moved = true
	for n > 0 {
		k := min(n, int64(len(c.bufs[c.bi])-c.off))
		c.off += int(k)
		n -= k
		if c.off == len(c.bufs[c.bi]) {
			c.bi, c.off = c.bi+1, 0
		}
	}
}

// BytesOut is how many bytes written to the socket it has accepted: a
// receiver's progress, for the memory budget's choice of whom to evict.
func (c *Conn) BytesOut() int64 { return c.bytesOut.Load() }

// writeConn writes c.bufs through c.Conn's Write, for a socket without
// syscall.Conn. c.wmu is held.
func (c *Conn) writeConn() error {
	for ; c.bi < len(c.bufs); c.bi, c.off = c.bi+1, 0 {
		for c.off < len(c.bufs[c.bi]) {
			n, err := c.Conn.Write(c.bufs[c.bi][c.off:])
			c.off += n
			c.done += int64(n)
			c.bytesOut.Add(int64(n))
			if err == nil {
				continue
			}
			if n > 0 {
				c.since = time.Now() // as near as this can tell
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if err = c.rearm(err); err == nil {
					continue
				}
			}
			if c.isAborted() {
				return ErrWritesAborted
			}
			return err
		}
	}
	return nil
}

// consume removes the first n bytes from v, as net.Buffers.WriteTo does.
func consume(v *net.Buffers, n int64) {
	for len(*v) > 0 {
		l := int64(len((*v)[0]))
		if l > n {
			(*v)[0] = (*v)[0][n:]
			return
		}
		n -= l
		(*v)[0] = nil
		*v = (*v)[1:]
	}
}
