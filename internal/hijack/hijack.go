// Package hijack puts the proxy's own net.Conn under a WebSocket connection.
//
// websocket.Accept takes the connection from the http.ResponseWriter's Hijack.
// Wrapping the ResponseWriter lets the proxy hand the library a *Conn instead,
// which gives the proxy what the library does not expose:
//
//   - whether the socket itself failed or reached EOF, so a message the library
//     reports as ended with io.EOF can be told apart from one cut off by a drop;
//   - a write timeout measured as "no bytes accepted for this long", not as a
//     deadline on a whole message;
//   - a way to abort a write in progress without closing the socket's read side
//     first;
//   - WriteFrames: whole data frames from the proxy's session writer, many
//     messages in one system call, slotted between the frames the library
//     writes (see WriteFrames for why that is safe);
//   - small buffers for the library, so that an idle connection holds little,
//     with reads ahead into a pooled buffer while the peer is sending.
package hijack

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	// ErrWritesAborted is returned by Write after AbortWrites.
	ErrWritesAborted = errors.New("writes aborted")
	// ErrCloseSent is returned by WriteFrames once a close frame has been
	// written: no data frame may follow it (RFC 6455 section 5.5.1).
	ErrCloseSent = errors.New("close frame already sent")
	// ErrMidFrame is returned by WriteFrames called while a frame the library
	// writes is incomplete: a bug in the caller.
	ErrMidFrame = errors.New("frames written in the middle of another frame")
)

// Conn is a net.Conn that records read failures and bounds write stalls.
// All methods may be called concurrently, as for any net.Conn.
type Conn struct {
	net.Conn

	// Static after construction.
	writeTimeout time.Duration

	readFailed atomic.Bool // a Read on the socket returned an error (EOF included)

	// Owned by the reading goroutine: bytes read ahead of the library's
	// small buffer (a pooled buffer, only while it holds unread bytes), and
	// the error a read ahead met, for when they are used up.
	ahead    *[]byte
	aheadPos int
	aheadErr error
	raw      syscall.RawConn    // the socket's, once needed
	rawRead  func(uintptr) bool // c.readAheadFD, made once
	rawBuf   []byte             // rawRead's buffer, and what it got:
	rawN     int
	rawErr   error

	// Guarded by mu: aborted and the write deadline are set together so an
	// abort cannot be overtaken by a Write refreshing its deadline.
	mu      sync.Mutex
	aborted bool

	// Guarded by wmu, held for every socket write, so that what one Write or
	// WriteFrames call carries reaches the socket in one piece.
	wmu sync.Mutex
	out frameScanner // follows the frames written through Write
}

// NewConn wraps c. A Write fails when the peer accepts no bytes for
// writeTimeout (0 means no timeout).
func NewConn(c net.Conn, writeTimeout time.Duration) *Conn {
	return &Conn{Conn: c, writeTimeout: writeTimeout}
}

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
	if c.rawRead == nil {
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return
		}
		c.raw, c.rawRead = raw, c.readAheadFD
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

// Write writes all of p: the WebSocket library's output. With a write timeout
// set, it fails only if the peer accepts no bytes for that long; a slow peer
// that keeps accepting bytes is given all the time it needs.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Scan first: a close frame counts as sent even if only part of it left.
	c.out.scan(p)
	return c.write(func() (int64, error) {
		n, err := c.Conn.Write(p)
		p = p[n:]
		return int64(n), err
	})
}

// WriteFrames writes bufs, which hold whole WebSocket frames of complete data
// messages, in as few system calls as the socket allows. The write timeout
// applies as for Write. bufs is consumed.
//
// The library writes its own frames (data frames of streamed messages, pings,
// pongs, close frames) through Write, each from a whole-frame buffer under its
// frame lock. WriteFrames holds the same socket lock as Write, so its frames
// never land inside one of the library's frames as long as the library is
// between frames, which it checks (ErrMidFrame); and it refuses to write once
// the library has sent a close frame (ErrCloseSent). The caller must be the
// connection's only writer of data messages, and must not call WriteFrames
// while a message it writes through the library is unfinished.
func (c *Conn) WriteFrames(bufs *net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.out.closeSent:
		return ErrCloseSent
	case !c.out.atBoundary():
		return ErrMidFrame
	}
	_, err := c.write(func() (int64, error) { return bufs.WriteTo(c.Conn) })
	return err
}

// write runs w, which writes what is left of something to the socket, until
// it is all written, refreshing the write deadline while the peer makes
// progress. c.wmu is held.
func (c *Conn) write(w func() (int64, error)) (int, error) {
	if c.writeTimeout <= 0 {
		if c.isAborted() {
			return 0, ErrWritesAborted
		}
		n, err := w()
		if err != nil && c.isAborted() {
			err = ErrWritesAborted // not the past deadline AbortWrites set
		}
		return int(n), err
	}
	var written int64
	for {
		c.mu.Lock()
		if c.aborted {
			c.mu.Unlock()
			return int(written), ErrWritesAborted
		}
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		c.mu.Unlock()

		n, err := w()
		written += n
		if err == nil {
			return int(written), nil
		}
		if n > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.isAborted() {
			continue // progress was made: the peer is slow, not stuck
		}
		if c.isAborted() {
			return int(written), ErrWritesAborted
		}
		return int(written), err
	}
}

// AbortWrites makes the Write in progress, and every later Write, fail at once.
// Reads are not affected.
func (c *Conn) AbortWrites() {
	c.mu.Lock()
	c.aborted = true
	_ = c.Conn.SetWriteDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

func (c *Conn) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// ResponseWriter wraps an http.ResponseWriter so that Hijack returns a *Conn.
// Pass it to websocket.Accept, then take the connection with Conn.
type ResponseWriter struct {
	http.ResponseWriter
	writeTimeout time.Duration
	conn         *Conn
}

// NewResponseWriter wraps w; writeTimeout is given to the hijacked Conn.
func NewResponseWriter(w http.ResponseWriter, writeTimeout time.Duration) *ResponseWriter {
	return &ResponseWriter{ResponseWriter: w, writeTimeout: writeTimeout}
}

// The buffers the WebSocket library gets, for as long as the connection
// lasts. net/http's are 4 KiB each; most connections are idle most of the
// time, so the library gets small ones instead. A busy reader still reads
// the socket in large pieces (see Conn.Read). The library's writer carries
// only what the session writer does not frame itself (see WriteFrames):
// control frames, which must fit whole (2 + 125 bytes) so that one reaches
// Write in one piece, and the frames of streamed messages, which are large.
const (
	libReadBufSize  = 512
	libWriteBufSize = 256
)

// Hijack implements http.Hijacker.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = NewConn(nc, w.writeTimeout)
	// The library re-points the reader at the returned conn after draining
	// what is already buffered, so every later socket read goes through
	// w.conn; bytes the client sent right after its request must be in the
	// new reader's buffer for that. Writes go through the writer, which must
	// therefore write to w.conn too.
	early := brw.Reader.Buffered()
	var rd io.Reader = w.conn
	if early > 0 {
		p, _ := brw.Reader.Peek(early)
		rd = io.MultiReader(bytes.NewReader(bytes.Clone(p)), w.conn)
	}
	br := bufio.NewReaderSize(rd, max(libReadBufSize, early))
	if early > 0 {
		if _, err := br.Peek(early); err != nil {
			return nil, nil, err
		}
	}
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.conn, libWriteBufSize)), nil
}

// Conn returns the hijacked connection, or nil before Hijack.
func (w *ResponseWriter) Conn() *Conn { return w.conn }

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
