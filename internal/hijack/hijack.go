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
//   - corking: the library flushes after every message, one system call each;
//     a corked Conn collects those writes and sends them together.
package hijack

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrWritesAborted is returned by Write after AbortWrites.
var ErrWritesAborted = errors.New("writes aborted")

// Conn is a net.Conn that records read failures and bounds write stalls.
// All methods may be called concurrently, as for any net.Conn.
type Conn struct {
	net.Conn

	// Static after construction.
	writeTimeout time.Duration

	readFailed atomic.Bool // a Read on the socket returned an error (EOF included)

	// Guarded by mu: aborted, closing and the write deadline are set together
	// so that an abort or a close cannot be overtaken by a Write refreshing its
	// deadline.
	mu      sync.Mutex
	aborted bool
	closing bool

	// Guarded by wmu, held for every socket write: whether writes are corked,
	// and the bytes held back meanwhile (a pooled buffer, only while corked
	// and not empty).
	wmu    sync.Mutex
	corked bool
	held   *[]byte
}

// corkBufSize bounds what a corked Conn holds back: when a write does not fit,
// what is held is sent first. It is also about the most one write system call
// of a small-message batch carries.
const corkBufSize = 64 << 10

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkBufSize); return &b }}

// closeFlushTimeout bounds how long Close spends sending bytes held back by a
// cork (typically a close frame the library wrote just before closing).
const closeFlushTimeout = 100 * time.Millisecond

// NewConn wraps c. A Write fails when the peer accepts no bytes for
// writeTimeout (0 means no timeout).
func NewConn(c net.Conn, writeTimeout time.Duration) *Conn {
	return &Conn{Conn: c, writeTimeout: writeTimeout}
}

// Read reads from the socket, remembering any failure.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readFailed.Store(true)
	}
	return n, err
}

// ReadFailed reports whether any Read on the socket has failed or hit EOF.
// Once true it stays true. Nothing in the WebSocket library reads past the end
// of a complete message, so a message that ends while ReadFailed is true was
// cut short by the connection dropping.
func (c *Conn) ReadFailed() bool { return c.readFailed.Load() }

// Write writes all of p. With a write timeout set, it fails only if the peer
// accepts no bytes for that long; a slow peer that keeps accepting bytes is
// given all the time it needs.
//
// While the Conn is corked, p may instead be held back and sent with what
// follows it, at the latest by Uncork or Close; a failure to send it is
// reported there.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.corked {
		return c.writeLocked(p)
	}
	if c.held == nil {
		c.held = corkBufs.Get().(*[]byte)
	}
	if len(*c.held)+len(p) > cap(*c.held) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.held)/2 {
			return c.writeLocked(p) // large: no point copying it
		}
	}
	*c.held = append(*c.held, p...)
	return len(p), nil
}

// Cork holds writes back until Uncork, so that the frames of several messages
// leave in one system call. Frames other goroutines write meanwhile (the
// library's pongs and close frames) are held back too, in order: a corking
// writer must uncork as soon as it has nothing left to write at once, and
// never wait on anything but this socket while corked.
func (c *Conn) Cork() {
	c.wmu.Lock()
	c.corked = true
	c.wmu.Unlock()
}

// Uncork sends what was held back and lets writes through again.
func (c *Conn) Uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corked = false
	err := c.flushLocked()
	if c.held != nil {
		*c.held = (*c.held)[:0]
		corkBufs.Put(c.held)
		c.held = nil
	}
	return err
}

// flushLocked sends what is held back. c.wmu is held.
func (c *Conn) flushLocked() error {
	if c.held == nil || len(*c.held) == 0 {
		return nil
	}
	_, err := c.writeLocked(*c.held)
	*c.held = (*c.held)[:0]
	return err
}

// Close sends what a cork still holds back, for at most closeFlushTimeout,
// then closes the socket.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closing = true
	if !c.aborted {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	}
	c.mu.Unlock()
	// A write in progress ends by the deadline at the latest.
	c.wmu.Lock()
	_ = c.flushLocked()
	c.wmu.Unlock()
	return c.Conn.Close()
}

// writeLocked writes p to the socket. c.wmu is held.
func (c *Conn) writeLocked(p []byte) (int, error) {
	if c.writeTimeout <= 0 {
		if c.isAborted() {
			return 0, ErrWritesAborted
		}
		n, err := c.Conn.Write(p)
		if err != nil && c.isAborted() {
			err = ErrWritesAborted // not the past deadline AbortWrites set
		}
		return n, err
	}
	written := 0
	for {
		c.mu.Lock()
		if c.aborted {
			c.mu.Unlock()
			return written, ErrWritesAborted
		}
		if !c.closing {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		}
		c.mu.Unlock()

		n, err := c.Conn.Write(p[written:])
		written += n
		if err == nil {
			return written, nil
		}
		if n > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.isAborted() && !c.isClosing() {
			continue // progress was made: the peer is slow, not stuck
		}
		if c.isAborted() {
			return written, ErrWritesAborted
		}
		return written, err
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

func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
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

// Hijack implements http.Hijacker.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = NewConn(nc, w.writeTimeout)
	// The library re-points brw.Reader at the returned conn after draining what
	// is already buffered, so every later socket read goes through w.conn.
	// Writes go through brw.Writer, which must therefore write to w.conn too.
	brw.Writer.Reset(w.conn)
	return w.conn, brw, nil
}

// Conn returns the hijacked connection, or nil before Hijack.
func (w *ResponseWriter) Conn() *Conn { return w.conn }

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
