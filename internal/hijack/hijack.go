// Package hijack puts the proxy's own net.Conn under a WebSocket connection.
//
// websocket.Accept takes the connection from the http.ResponseWriter's Hijack.
// Wrapping the ResponseWriter lets the proxy hand the library a *Conn instead,
// which gives the proxy what the library does not expose:
//
//   - whether the socket itself failed or reached EOF, so a message the library
//     reports as ended with io.EOF can be told apart from one cut off by a drop;
//   - a write timeout measured as "no byte accepted for this long", counted
//     from the last byte the socket accepted, not a deadline on a whole
//     message; a hook at the first stall (OnWriteStall); an absolute bound on
//     what is left to write (LimitWrites), which after that stall replaces
//     the timeout; and a way to abort a write in progress without closing
//     the socket's read side first (AbortWrites);
//   - WriteFrames: data frames the proxy's session writer frames itself
//     (whole messages, or fragments of a streamed one), many in one system
//     call, slotted between the frames the library writes (see WriteFrames
//     for why that is safe);
//   - WriteClose: the proxy's own close frame, after which nothing goes out,
//     the library's close frame included, and CloseSent, whether a close frame
//     reached the socket whole;
//   - PayloadIn, the data payload received so far, for telling a stalled
//     message from a slow one;
//   - ErrInvalidClose: a close frame whose reason is not UTF-8 never reaches
//     the library, which would echo it as a clean close;
//   - small buffers for the library, so that an idle connection holds little,
//     with reads ahead into a pooled buffer while the peer is sending.
//
// The library itself then writes only control frames through Conn.Write
// (pings, pongs, close), each whole in one call.
package hijack

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a net.Conn that records read failures and bounds write stalls.
// All methods may be called concurrently, as for any net.Conn, except Read,
// which one goroutine calls.
//
// # Reads
//
// Read hands the library the socket's bytes, reading ahead while the peer
// is sending, and follows the client's frames in what it hands out, each
// byte once: PayloadIn counts their data payload, and a close frame whose
// reason is not UTF-8 is stopped before its last byte (ErrInvalidClose).
// ReadFailed records whether the socket itself failed.
//
// # Writes
//
// Write (the library's output), WriteFrames and WriteClose each hold one lock
// for the whole call, so what one call carries reaches the socket in one
// piece. All three are bounded in time alike, and fail with a timeout error
// (a net.Error whose Timeout is true, wrapping os.ErrDeadlineExceeded) when
// one of these ends them:
//
//   - the progress rule: with a write timeout, a write fails once the socket
//     has accepted none of its bytes for writeTimeout, counted from the last
//     byte the kernel accepted (or from the start of the write). A slow peer
//     that keeps accepting bytes is given all the time it needs. But the
//     first time this happens, the function OnWriteStall set is called, and
//     if a limit is set (by it, or before), the write goes on until the limit
//     instead of failing;
//   - LimitWrites, an absolute bound that no progress extends.
//
// AbortWrites fails them at once instead, with ErrWritesAborted. A write that
// fails part-way through a frame leaves the stream where nothing can follow:
// every later write fails with the same error.
//
// On a socket that implements syscall.Conn (TCP, Unix), a write that cannot
// finish at once waits for the kernel to report the socket writable, and
// also tries again writeTimeout/64 after it began, then at intervals that
// double up to writeTimeout/4, and when writeTimeout has passed since the
// last progress: the kernel reports a socket writable only once about a
// third of its send buffer is free, so a peer reading slowly, or the peer's
// delayed acknowledgment, makes room that it does not report. A stall is
// therefore noticed between writeTimeout and 1.25 writeTimeout after the
// last byte the socket took (to a peer that reads nothing, with a 1 s
// timeout, about 1.05 s after the socket filled). A write that completes at
// once costs one system call and one SetWriteDeadline; a blocked one moves
// the deadline about five times per writeTimeout, four more as it begins,
// never whenever the socket becomes writable.
// On any other net.Conn (a net.Pipe; a *tls.Conn, which a timed-out write
// breaks for good) each Write call on it gets writeTimeout and is tried
// again while it makes progress, so a stall is noticed between one and two
// writeTimeouts after the last progress.
//
// The socket's write deadline belongs to Conn: bound writes with LimitWrites
// or AbortWrites, never with SetWriteDeadline or SetDeadline.
type Conn struct {
	net.Conn

	// Static after construction.
	writeTimeout time.Duration
	raw          syscall.RawConn    // the socket's, if it has one
	rawWrite     func(uintptr) bool // c.writeFD, made once (if raw)
	onStall      func()             // set by OnWriteStall, before any write

	readFailed atomic.Bool  // a Read on the socket returned an error (EOF included)
	payloadIn  atomic.Int64 // data payload bytes Read has handed out
	bytesOut   atomic.Int64 // bytes written that the socket accepted
	closeSent  atomic.Bool  // a close frame has reached the socket whole

	// Owned by the reading goroutine: bytes read ahead of the library's
	// small buffer (a pooled buffer, only while it holds unread bytes), and
	// the error a read ahead met, for when they are used up.
	ahead    *[]byte
	aheadPos int
	aheadErr error
	rawRead  func(uintptr) bool // c.readAheadFD, made once needed
	rawBuf   []byte             // rawRead's buffer, and what it got:
	rawN     int
	rawErr   error
	// Also the reading goroutine's: the client's frames followed through
	// what Read hands out, and ErrInvalidClose once Read returns it.
	in    frameParser
	inErr error

	// Guarded by mu, with the socket's write deadline, so that an abort or a
	// limit cannot be overtaken by a write moving the deadline.
	mu       sync.Mutex
	aborted  bool
	limit    time.Time // from LimitWrites; zero if none
	deadline time.Time // the socket's write deadline; zero if none

	// Guarded by wmu, held for every socket write, so that what one Write,
	// WriteFrames or WriteClose call carries reaches the socket in one piece.
	wmu     sync.Mutex
	out     frameScanner // follows the frames the socket has accepted
	torn    error        // the error of a write that failed mid-frame
	stalled bool         // onStall has been called
	// The write in progress: what is left of it is bufs[bi][off:] and the
	// buffers after it; done bytes are written. The rest is writeFD's.
	bufs  [][]byte
	bi    int
	off   int
	done  int64
	since time.Time       // when the last byte was accepted (or the write began)
	moved bool            // bytes were accepted since since was last set
	probe bool            // the next writeFD call follows a wait that met the deadline
	step  time.Duration   // the interval between probes, doubling
	werr  error           // the error writeFD met
	one   [1][]byte       // bufs for a single buffer
	iov   []syscall.Iovec // writeFD's, kept across writes
	iovN  int             // entries of iov that may hold pointers
}

// NewConn wraps c. Writes fail when the peer accepts no bytes for
// writeTimeout (0 means no timeout); see Conn.
func NewConn(c net.Conn, writeTimeout time.Duration) *Conn {
	nc := &Conn{Conn: c, writeTimeout: writeTimeout}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			nc.raw = raw
			nc.rawWrite = nc.writeFD
		}
	}
	return nc
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
	// therefore write to w.conn too. The early bytes reach the library
	// without Read, so they are followed here as Read would (and cut short
	// like Read would cut them).
	var rd io.Reader = w.conn
	early, _ := w.conn.handOut(peekBuffered(brw.Reader))
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

// peekBuffered returns what br holds, without consuming it.
func peekBuffered(br *bufio.Reader) []byte {
	p, _ := br.Peek(br.Buffered())
	return p
}

// Conn returns the hijacked connection, or nil before Hijack.
func (w *ResponseWriter) Conn() *Conn { return w.conn }

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
