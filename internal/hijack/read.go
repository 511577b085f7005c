package hijack

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
)

// ErrInvalidClose is what Read returns once the peer has sent a close frame
// whose reason is not UTF-8, instead of that frame's last byte. The library
// would answer such a frame with a clean close echoing the reason, where
// RFC 6455 (section 8.1) wants the connection failed (1007); so Read hands
// the library every byte before that one, then returns ErrInvalidClose for
// good, which the library reports wrapped from Reader or from a message's
// Read. It is not a socket failure: ReadFailed stays false. (A message it
// interrupts ends with that error, never with the io.EOF that ReadFailed
// tells apart.) Every other close frame reaches the library untouched; the
// library refuses the other invalid ones itself, with 1002.
var ErrInvalidClose = errors.New("close frame from the peer with a reason that is not UTF-8")

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
//
// Read follows the client's frames in what it hands out, for PayloadIn and
// ErrInvalidClose.
func (c *Conn) Read(p []byte) (int, error) {
	if c.inErr != nil {
		return 0, c.inErr
	}
	n, err := c.read(p)
	if n > 0 {
		if k, ierr := c.handOut(p[:n]); ierr != nil {
			return k, ierr
		}
	}
	return n, err
}

// handOut follows p, bytes about to be handed to the library, and returns
// how many of them may be: all, unless they end a close frame the library
// must not see whole (then ErrInvalidClose, kept in c.inErr).
func (c *Conn) handOut(p []byte) (int, error) {
	n, payload, ok := c.in.scan(p)
	if payload > 0 {
		c.payloadIn.Add(payload)
	}
	if !ok {
		c.inErr = ErrInvalidClose
		if c.ahead != nil {
			*c.ahead = (*c.ahead)[:cap(*c.ahead)]
			readAheadBufs.Put(c.ahead)
			c.ahead = nil
		}
		return n, c.inErr
	}
	return n, nil
}

// read reads from the socket or from what was read ahead.
func (c *Conn) read(p []byte) (int, error) {
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
// cut short by the connection dropping. ErrInvalidClose does not make it
// true.
func (c *Conn) ReadFailed() bool { return c.readFailed.Load() }

// PayloadIn returns how many bytes of data frame payload (text, binary and
// continuation frames) Read has handed the library so far; headers and
// control frames do not count, nor bytes read ahead and not yet handed out.
// Any goroutine may call it. It moves whenever the message being read makes
// progress, and only then: an empty fragment does not move it.
func (c *Conn) PayloadIn() int64 { return c.payloadIn.Load() }
