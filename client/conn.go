package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// MessageType is a message's type: text (valid UTF-8) or binary.
type MessageType int

const (
	Text   = MessageType(websocket.MessageText)
	Binary = MessageType(websocket.MessageBinary)
)

func (t MessageType) String() string {
	switch t {
	case Text:
		return "text"
	case Binary:
		return "binary"
	}
	return fmt.Sprintf("MessageType(%d)", int(t))
}

// Config says where to connect and as whom. URL, ID and Group are required.
type Config struct {
	// URL is the proxy's WebSocket endpoint, such as ws://127.0.0.1:8080/ws
	// (http and https are taken as ws and wss). Its query, if any, is kept;
	// id and groupName are added.
	URL   string
	ID    string
	Group string

	// TokenSource, if set, is called before every connection attempt; its
	// token is sent as "Authorization: Bearer <token>".
	TokenSource func(ctx context.Context) (string, error)
	// Header is sent with the handshake.
	Header http.Header
	// HTTPClient carries the handshake (TLS settings, proxies). Its Transport,
	// if set, must be an *http.Transport.
	HTTPClient *http.Client
	// HandshakeTimeout bounds each connection attempt; default 10 s.
	HandshakeTimeout time.Duration
}

func (cfg Config) dialURL() (string, error) {
	if cfg.URL == "" || cfg.ID == "" || cfg.Group == "" {
		return "", errors.New("client: Config needs URL, ID and Group")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return "", fmt.Errorf("client: bad URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return "", fmt.Errorf("client: URL scheme must be ws or wss, not %q", u.Scheme)
	}
	q := u.Query()
	q.Set("id", cfg.ID)
	q.Set("groupName", cfg.Group)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Conn is one connection to a group. It does not reconnect.
//
// Send, SendStream and Writer may be called concurrently: messages go out
// one at a time, each whole. Next and the Message it returns belong to one
// reader at a time. Close may be called at any time, from any goroutine.
// The connection answers the proxy's pings only while someone reads (calls
// Next and reads or discards what it returns).
type Conn struct {
	// Static after Dial.
	ws      *websocket.Conn
	dropped *atomic.Bool // the socket hit an error or EOF underneath the library

	writeSlot chan struct{} // one message writer at a time

	// Owned by the read loop, which hands each message to Next.
	msgs       chan *Message
	readerDone chan struct{}
	readErr    error // set before readerDone is closed

	cur *Message // owned by the caller of Next

	closeOnce sync.Once
	closed    chan struct{} // closed when this side closes
}

// Dial connects to the group. ctx bounds the handshake only (and
// cfg.HandshakeTimeout each attempt); the connection lives until Close or
// until it ends. A refusal is a *HandshakeError.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	u, err := cfg.dialURL()
	if err != nil {
		return nil, err
	}
	return dial(ctx, u, cfg)
}

// dial connects to the URL u with cfg's settings (not its URL, ID, Group).
func dial(ctx context.Context, u string, cfg Config) (*Conn, error) {
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	header := cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if cfg.TokenSource != nil {
		tok, err := cfg.TokenSource(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: token source: %w", err)
		}
		header.Set("Authorization", "Bearer "+tok)
	}
	dropped := new(atomic.Bool)
	hc, err := httpClient(cfg.HTTPClient, dropped)
	if err != nil {
		return nil, err
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, handshakeError(resp)
		}
		return nil, fmt.Errorf("client: dial: %w", err)
	}
	// The caller decides how much of a message to hold, not the library.
	ws.SetReadLimit(-1)
	c := &Conn{
		ws:         ws,
		dropped:    dropped,
		writeSlot:  make(chan struct{}, 1),
		msgs:       make(chan *Message),
		readerDone: make(chan struct{}),
		closed:     make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

// httpClient is a copy of hc (or a default) whose connections record a
// read error underneath the WebSocket library: the library reports a
// connection that drops in the middle of a message as the message's end
// (io.EOF), and this flag tells the two apart.
func httpClient(hc *http.Client, dropped *atomic.Bool) (*http.Client, error) {
	var tr *http.Transport
	out := &http.Client{}
	if hc != nil {
		*out = *hc
		if hc.Transport != nil {
			t, ok := hc.Transport.(*http.Transport)
			if !ok {
				return nil, errors.New("client: Config.HTTPClient.Transport must be an *http.Transport")
			}
			tr = t.Clone()
		}
	}
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	// No pool: a refused handshake must not leave a connection behind.
	tr.DisableKeepAlives = true
	tr.ForceAttemptHTTP2 = false
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &watchedConn{Conn: nc, dropped: dropped}, nil
	}
	out.Transport = tr
	return out, nil
}

type watchedConn struct {
	net.Conn
	dropped *atomic.Bool
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.dropped.Store(true)
	}
	return n, err
}

// readLoop hands each message to Next and, once the caller is done with it,
// reads what is left of it, then the next one. It ends when the connection
// does.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			c.readErr = c.wrapErr(err)
			return
		}
		m := &Message{Type: MessageType(typ), r: r, conn: c, done: make(chan struct{})}
		select {
		case c.msgs <- m:
		case <-c.closed:
			c.readErr = ErrClosed
			return
		}
		select {
		case <-m.done:
		case <-c.closed:
			c.readErr = ErrClosed
			return
		}
		if !m.eof {
			if _, err := io.Copy(io.Discard, r); err != nil {
				c.readErr = c.wrapErr(err)
				return
			}
			if c.dropped.Load() {
				c.readErr = ErrConnectionLost
				return
			}
		}
	}
}

// wrapErr turns the library's errors into this package's.
func (c *Conn) wrapErr(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
	}
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	return fmt.Errorf("%w: %v", ErrConnectionLost, err)
}

// writeErr explains a failed write by why the connection ended, which the
// reader learns (a close frame is read, not written): it waits a moment for
// the reader to finish.
func (c *Conn) writeErr(err error) error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.readerDone:
		return c.readErr
	case <-c.closed:
		return ErrClosed
	case <-t.C:
		return c.wrapErr(err)
	}
}

// Next waits for the next message, for as long as ctx allows; a ctx that
// ends leaves the connection as it was. Whatever the caller did not read of
// the previous message is discarded first. Once the connection has ended,
// Next returns why: a *CloseError, ErrConnectionLost or ErrClosed.
func (c *Conn) Next(ctx context.Context) (*Message, error) {
	if c.cur != nil {
		c.cur.finish()
		c.cur = nil
	}
	select {
	case m := <-c.msgs:
		c.cur = m
		return m, nil
	case <-c.readerDone:
		return nil, c.readErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Done is closed when the connection has ended and every message before the
// end has been taken with Next. Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.readerDone }

// Err is why the connection ended (nil while it has not).
func (c *Conn) Err() error {
	select {
	case <-c.readerDone:
		return c.readErr
	default:
		return nil
	}
}

// Message is one received message, read as a stream. It is valid until the
// next call of Next; not safe for concurrent use.
type Message struct {
	Type MessageType

	conn *Conn
	r    io.Reader

	mu       sync.Mutex
	eof      bool
	finished bool
	done     chan struct{}
	n        int64
}

// Read reads the message's bytes; io.EOF marks its end. A connection that
// drops part-way gives ErrConnectionLost, never a short message that looks
// whole.
func (m *Message) Read(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finished {
		return 0, errors.New("client: message read after Next or Discard")
	}
	if m.eof {
		return 0, io.EOF
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	if err == io.EOF {
		if m.conn.dropped.Load() {
			return n, ErrConnectionLost
		}
		m.eof = true
		return n, io.EOF
	}
	if err != nil {
		return n, m.conn.wrapErr(err)
	}
	return n, nil
}

// Bytes reads the rest of the message into memory, or returns ErrTooLarge
// (and discards the message) if it is longer than max bytes.
func (m *Message) Bytes(max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(m, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		m.Discard()
		return nil, ErrTooLarge
	}
	return b, nil
}

// Discard gives up the rest of the message; the connection reads past it.
func (m *Message) Discard() { m.finish() }

func (m *Message) finish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.finished {
		m.finished = true
		close(m.done)
	}
}

// Writer opens the next message for writing: everything written until Close
// is one message of type typ, sent as it is written (never held whole).
// Writers wait for each other: ctx bounds that wait, and returns ctx.Err()
// with the connection untouched. ctx also bounds the message: if it ends
// before Close, the connection is closed and Write or Close returns
// ErrMessageAborted (receivers part-way through get 4002 from the proxy).
func (c *Conn) Writer(ctx context.Context, typ MessageType) (io.WriteCloser, error) {
	select {
	case c.writeSlot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	case <-c.readerDone:
		return nil, c.readErr
	}
	if err := ctx.Err(); err != nil {
		<-c.writeSlot
		return nil, err
	}
	w, err := c.ws.Writer(context.Background(), websocket.MessageType(typ))
	if err != nil {
		<-c.writeSlot
		return nil, c.writeErr(err)
	}
	mw := &messageWriter{c: c, w: w, ctx: ctx}
	mw.stop = context.AfterFunc(ctx, func() { _ = c.ws.CloseNow() })
	return mw, nil
}

type messageWriter struct {
	c      *Conn
	w      io.WriteCloser
	ctx    context.Context
	stop   func() bool
	closed bool
}

func (mw *messageWriter) err(err error) error {
	if mw.ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrMessageAborted, context.Cause(mw.ctx))
	}
	return mw.c.writeErr(err)
}

func (mw *messageWriter) Write(p []byte) (int, error) {
	if mw.closed {
		return 0, errors.New("client: write after Close")
	}
	if mw.ctx.Err() != nil {
		_ = mw.c.ws.CloseNow()
		return 0, fmt.Errorf("%w: %w", ErrMessageAborted, context.Cause(mw.ctx))
	}
	n, err := mw.w.Write(p)
	if err != nil {
		return n, mw.err(err)
	}
	return n, nil
}

// Close finishes the message, unless its context has ended: then the
// message is abandoned and the connection closed.
func (mw *messageWriter) Close() error {
	if mw.closed {
		return errors.New("client: message writer closed twice")
	}
	mw.closed = true
	defer func() { <-mw.c.writeSlot }()
	if !mw.stop() || mw.ctx.Err() != nil {
		_ = mw.c.ws.CloseNow() // the fin must never go out
		return fmt.Errorf("%w: %w", ErrMessageAborted, context.Cause(mw.ctx))
	}
	if err := mw.w.Close(); err != nil {
		return mw.err(err)
	}
	return nil
}

// Send sends p as one message (see Writer for what ctx bounds).
func (c *Conn) Send(ctx context.Context, typ MessageType, p []byte) error {
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return err
	}
	if _, err := w.Write(p); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// SendStream sends everything r yields, until io.EOF, as one message, 32 KiB
// at a time, and returns how many bytes it sent. If r fails, the message
// cannot be finished: the connection is closed (receivers part-way get
// 4002) and the error is returned.
func (c *Conn) SendStream(ctx context.Context, typ MessageType, r io.Reader) (int64, error) {
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return 0, err
	}
	n, err := copyMessage(w, r)
	if err != nil {
		_ = c.ws.CloseNow()
		_ = w.Close()
		return n, err
	}
	return n, w.Close()
}

// copyMessage copies r to w, telling a read error from a write error.
func copyMessage(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("client: reading what to send: %w", rerr)
		}
	}
}

// Close closes the connection with 1000 and waits (up to about 5 s) for the
// proxy's answer. Later calls of any method return ErrClosed.
func (c *Conn) Close() error { return c.CloseWith(int(websocket.StatusNormalClosure), "") }

// CloseWith closes the connection with code and a short reason (at most
// 123 bytes).
func (c *Conn) CloseWith(code int, reason string) error {
	first := false
	c.closeOnce.Do(func() { first = true; close(c.closed) })
	if !first {
		<-c.readerDone
		return nil
	}
	// The library's error here says only how the handshake went (the proxy
	// may have closed first, or not answered): the connection is closed
	// either way.
	_ = c.ws.Close(websocket.StatusCode(code), reason)
	<-c.readerDone
	return nil
}

// closeNow drops the connection without a close handshake.
func (c *Conn) closeNow() {
	c.closeOnce.Do(func() { close(c.closed) })
	_ = c.ws.CloseNow()
	<-c.readerDone
}
