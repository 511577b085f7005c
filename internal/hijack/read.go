package hijack

import (
	"io"
	"os"
	"sync"
	"syscall"
)

// readAheadSize is how much a busy reader takes from the socket at once.
const readAheadSize = 32 << 10

var readAheadBufs = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// Read reads from the socket, remembering any failure. One goroutine reads.
//
// The library reads through a small buffer, so that an idle connection holds
// little. When a read fills that buffer, more is probably waiting: Read then
// takes what the socket holds right away (without waiting) into a pooled
// buffer and serves the next reads from it, giving the buffer back when it
// is used up. An idle reader waits on the socket holding no pooled buffer.
func (c *Conn) Read(p []byte) (int, error) {
	if c.ahead != nil {
		n := copy(p, (*c.ahead)[c.aheadPos:])
		c.aheadPos += n
		if c.aheadPos == len(*c.ahead) {
			*c.ahead = (*c.ahead)[:cap(*c.ahead)]
			readAheadBufs.Put(c.ahead)
			c.ahead = nil
		}
		return n, nil
	}
	if err := c.aheadErr; err != nil {
		c.readFailed.Store(true)
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readFailed.Store(true)
		return n, err
	}
	if n == len(p) && n < readAheadSize {
		c.readAhead()
	}
	return n, nil
}

// readAhead takes what the socket holds now, if anything, without waiting.
func (c *Conn) readAhead() {
	if c.raw == nil {
		return
	}
	if c.rawRead == nil {
		c.rawRead = c.readAheadFD
	}
	bp := readAheadBufs.Get().(*[]byte)
	c.rawBuf = *bp
	err := c.raw.Read(c.rawRead)
	n, rerr := c.rawN, c.rawErr
	c.rawBuf, c.rawErr = nil, nil
	switch {
	case err != nil: // closed, or past a deadline: the next read says so
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
	case rerr != nil:
		c.aheadErr = os.NewSyscallError("read", rerr)
	case n == 0:
		c.aheadErr = io.EOF
	default:
		*bp = (*bp)[:n]
		c.ahead, c.aheadPos = bp, 0
		return
	}
	readAheadBufs.Put(bp)
}

// readAheadFD reads once into c.rawBuf, never waiting.
func (c *Conn) readAheadFD(fd uintptr) bool {
	c.rawN, c.rawErr = syscall.Read(int(fd), c.rawBuf)
	return true
}

// ReadFailed reports whether any Read on the socket has failed or hit EOF.
// Once true it stays true. Nothing in the WebSocket library reads past the end
// of a complete message, so a message that ends while ReadFailed is true was
// cut short by the connection dropping.
func (c *Conn) ReadFailed() bool { return c.readFailed.Load() }
