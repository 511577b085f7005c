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
//     first.
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

	// Guarded by mu: aborted and the write deadline are set together so an
	// abort cannot be overtaken by a Write refreshing its deadline.
	mu      sync.Mutex
	aborted bool
}

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
func (c *Conn) Write(p []byte) (int, error) {
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
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		c.mu.Unlock()

		n, err := c.Conn.Write(p[written:])
		written += n
		if err == nil {
			return written, nil
		}
		if n > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.isAborted() {
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
