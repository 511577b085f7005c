package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// ClientConfig is a Client's settings: where to connect (Config) and how to
// behave.
type ClientConfig struct {
	Config

	// Policy decides about reconnecting; nil is DefaultPolicy.
	Policy Policy
	// FailFast makes Run return if the very first attempt fails, instead of
	// retrying it like any other.
	FailFast bool
	// MaxTextBytes bounds a text message the Client reads into memory for
	// OnText and typed handlers (default 16 MiB). A larger one is discarded
	// and reported to OnError.
	MaxTextBytes int64
	// QueueBytes bounds the text messages waiting for their handlers (default
	// 8 MiB). When it is full the Client stops reading, and the proxy's slow
	// consumer rules apply (docs/protocol.md section 4): a handler slower
	// than the proxy's write timeout gets this client closed with 1008.
	QueueBytes int64

	// OnConnect, OnDisconnect and OnError run on the handler goroutine, in
	// order with the messages. Calling the Client from them is safe.
	OnConnect    func(ctx context.Context)
	OnDisconnect func(ctx context.Context, r Retry, delay time.Duration, reconnect bool)
	OnError      func(ctx context.Context, err error)
}

// Client is a reconnecting member of a group. Register handlers, then call
// Run. All methods are safe for concurrent use and from inside handlers;
// none of them waits for the handler goroutine, so none deadlocks there.
//
// Handlers run one at a time, in the order the messages arrived. A handler's
// error goes to OnError; it never closes the connection.
//
// Sending waits (ctx-bounded) for a connection. Nothing is queued for a
// later connection and nothing is ever sent twice: a send on a connection
// that drops fails with ErrConnectionLost, and the caller decides.
type Client struct {
	cfg ClientConfig

	// Set before Run.
	typed    map[string]func(context.Context, *Envelope) error
	onText   func(context.Context, string) error
	onBinary func(context.Context, *Message) error

	mu      sync.Mutex
	started bool          // handlers can no longer be registered
	ran     bool          // Run has been called
	conn    *Conn         // the current connection, nil between connections
	up      chan struct{} // closed when conn is set; replaced when it ends
	pending map[string]chan *Envelope
	cancel  context.CancelFunc

	done chan struct{} // closed when Run has ended
}

// New returns a client; nothing connects until Run.
func New(cfg ClientConfig) *Client {
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy
	}
	if cfg.MaxTextBytes <= 0 {
		cfg.MaxTextBytes = 16 << 20
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 8 << 20
	}
	return &Client{
		cfg:     cfg,
		typed:   map[string]func(context.Context, *Envelope) error{},
		up:      make(chan struct{}),
		pending: map[string]chan *Envelope{},
		done:    make(chan struct{}),
	}
}

func (c *Client) mustNotHaveStarted() {
	if c.started {
		panic("client: handlers must be registered before Run")
	}
}

func (c *Client) handle(typeName string, h func(context.Context, *Envelope) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveStarted()
	if _, dup := c.typed[typeName]; dup {
		panic("client: a second handler for " + typeName)
	}
	c.typed[typeName] = h
}

// OnText handles text messages that are not envelopes of a registered type.
// Without it they are ignored.
func (c *Client) OnText(h func(ctx context.Context, text string) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveStarted()
	c.onText = h
}

// OnBinary handles binary messages as streams: m is valid only during the
// call (what h leaves unread is discarded). Without it they are discarded.
func (c *Client) OnBinary(h func(ctx context.Context, m *Message) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveStarted()
	c.onBinary = h
}

// ID is the member id this client connects as.
func (c *Client) ID() string { return c.cfg.ID }

// Close ends Run (its connection is closed with 1000). It does not wait:
// Run returns once the handler running now, if any, has returned. Called
// before Run, it makes Run return nil at once.
func (c *Client) Close() {
	c.mu.Lock()
	cancel := c.cancel
	c.started = true
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Done is closed when Run has returned.
func (c *Client) Done() <-chan struct{} { return c.done }

// Connected reports whether the client has a connection now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// WaitConnected waits until the client has a connection.
func (c *Client) WaitConnected(ctx context.Context) error {
	_, err := c.current(ctx)
	return err
}

func (c *Client) current(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, up := c.conn, c.up
		c.mu.Unlock()
		if conn != nil {
			return conn, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

// Send sends p as one message on the current connection, waiting for one
// if there is none (ctx bounds the wait; see Conn.Writer for the rest).
func (c *Client) Send(ctx context.Context, typ MessageType, p []byte) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	return conn.Send(ctx, typ, p)
}

// Writer opens one message on the current connection (see Conn.Writer).
func (c *Client) Writer(ctx context.Context, typ MessageType) (io.WriteCloser, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	return conn.Writer(ctx, typ)
}

// SendStream sends r as one message on the current connection.
func (c *Client) SendStream(ctx context.Context, typ MessageType, r io.Reader) (int64, error) {
	conn, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	return conn.SendStream(ctx, typ, r)
}

// Run connects, reads and dispatches, and reconnects by the policy, until
// ctx ends or Close is called (then it returns nil), or until the policy
// says stop (then it returns why: a *CloseError, a *HandshakeError, ...).
// It can be called once. Every goroutine it starts has ended when it
// returns.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		early := c.cancel == nil && !c.ran
		c.ran = true
		c.mu.Unlock()
		if early { // Close came first
			close(c.done)
			return nil
		}
		return errors.New("client: Run called twice")
	}
	c.ran = true
	c.started = true
	ctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	c.mu.Unlock()
	defer close(c.done)
	defer cancel()

	q := newQueue(c.cfg.QueueBytes)
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		c.dispatch(ctx, q)
	}()
	err := c.loop(ctx, q)
	q.close()
	cancel()
	<-dispatched
	return err
}

func (c *Client) loop(ctx context.Context, q *queue) error {
	attempt, streak := 0, 0
	var lastCause int
	first := true
	for {
		conn, err := Dial(ctx, c.cfg.Config)
		if ctx.Err() != nil {
			if conn != nil {
				_ = conn.Close()
			}
			return nil
		}
		var upFor time.Duration
		if err == nil {
			first = false
			start := time.Now()
			c.setConn(conn)
			q.push(item{event: func(ctx context.Context) {
				if c.cfg.OnConnect != nil {
					c.cfg.OnConnect(ctx)
				}
			}})
			err = c.read(ctx, conn, q)
			c.setConn(nil)
			upFor = time.Since(start)
			if ctx.Err() != nil {
				_ = conn.Close()
				return nil
			}
		} else if first && c.cfg.FailFast {
			return err
		}
		if upFor >= StableAfter {
			attempt = 0
		}
		r := Retry{Attempt: attempt, Err: err, HasTokenSource: c.cfg.TokenSource != nil}
		var ce *CloseError
		var he *HandshakeError
		cause := -1
		switch {
		case errors.As(err, &ce):
			r.Code, cause = ce.Code, ce.Code
		case errors.As(err, &he):
			r.HTTPStatus, r.RetryAfter, cause = he.Status, he.RetryAfter, 10000+he.Status
		case errors.Is(err, ErrConnectionLost):
			r.Code, cause = CodeAbnormal, CodeAbnormal
		}
		if cause == lastCause {
			streak++
		} else {
			streak = 1
		}
		lastCause = cause
		r.Streak = streak
		delay, again := c.cfg.Policy(r)
		q.push(item{event: func(ctx context.Context) {
			if c.cfg.OnDisconnect != nil {
				c.cfg.OnDisconnect(ctx, r, delay, again)
			}
		}})
		if !again {
			return err
		}
		attempt++
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

func (c *Client) setConn(conn *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	if conn != nil {
		close(c.up)
	} else {
		c.up = make(chan struct{})
	}
}

// read reads conn until it ends, matching replies to Requests at once and
// queueing everything else for the handler goroutine.
func (c *Client) read(ctx context.Context, conn *Conn, q *queue) error {
	for {
		m, err := conn.Next(ctx)
		if err != nil {
			return err
		}
		if m.Type == Binary {
			if c.onBinary == nil {
				continue // Next discards it
			}
			done := make(chan struct{})
			q.push(item{binary: m, done: done})
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		b, err := m.Bytes(c.cfg.MaxTextBytes)
		if errors.Is(err, ErrTooLarge) {
			q.push(item{event: func(ctx context.Context) {
				c.report(ctx, errors.New("client: a text message over MaxTextBytes was discarded"))
			}})
			continue
		}
		if err != nil {
			return err
		}
		if e, perr := ParseEnvelope(b); perr == nil && e.ReplyTo != "" {
			c.mu.Lock()
			ch := c.pending[e.ReplyTo]
			c.mu.Unlock()
			if ch != nil {
				select {
				case ch <- e:
				default: // already answered
				}
				continue
			}
		}
		if !q.pushText(ctx, b) {
			return ctx.Err()
		}
	}
}

func (c *Client) report(ctx context.Context, err error) {
	if err != nil && c.cfg.OnError != nil {
		c.cfg.OnError(ctx, err)
	}
}

// dispatch runs the handlers, one at a time, in arrival order.
func (c *Client) dispatch(ctx context.Context, q *queue) {
	for {
		it, ok := q.pop()
		if !ok {
			return
		}
		switch {
		case it.event != nil:
			it.event(ctx)
		case it.binary != nil:
			c.report(ctx, c.onBinary(ctx, it.binary))
			close(it.done)
		default:
			c.dispatchText(ctx, it.text)
		}
	}
}

func (c *Client) dispatchText(ctx context.Context, b []byte) {
	if e, err := ParseEnvelope(b); err == nil {
		if h := c.typed[e.Type]; h != nil {
			c.report(ctx, h(ctx, e))
			return
		}
	}
	if c.onText != nil {
		c.report(ctx, c.onText(ctx, string(b)))
	}
}

// item is one thing for the handler goroutine.
type item struct {
	text   []byte
	binary *Message
	done   chan struct{} // closed when the binary handler returned
	event  func(context.Context)
}

// queue is the reader's hand-off to the handler goroutine, bounded in bytes
// of text (a binary message is not queued: the reader waits for its
// handler).
type queue struct {
	mu     sync.Mutex
	items  []item
	bytes  int64
	max    int64
	closed bool
	more   chan struct{} // signalled when items or closed change
	space  chan struct{} // signalled when bytes shrink
}

func newQueue(max int64) *queue {
	return &queue{max: max, more: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (q *queue) push(it item) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	signal(q.more)
}

// pushText queues b, waiting while the queue is over its bound (but never
// refusing a message to an empty queue). False if ctx ended first.
func (q *queue) pushText(ctx context.Context, b []byte) bool {
	for {
		q.mu.Lock()
		if q.bytes == 0 || q.bytes+int64(len(b)) <= q.max || q.closed {
			q.items = append(q.items, item{text: b})
			q.bytes += int64(len(b))
			q.mu.Unlock()
			signal(q.more)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-ctx.Done():
			return false
		}
	}
}

func (q *queue) pop() (item, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			it := q.items[0]
			q.items[0] = item{}
			q.items = q.items[1:]
			q.bytes -= int64(len(it.text))
			q.mu.Unlock()
			signal(q.space)
			return it, true
		}
		if q.closed {
			q.mu.Unlock()
			return item{}, false
		}
		q.mu.Unlock()
		<-q.more
	}
}

// close ends the queue: the messages still in it are dropped (a binary
// handler's reader is released), the events (OnDisconnect) still run, then
// pop returns false.
func (q *queue) close() {
	q.mu.Lock()
	var events []item
	for _, it := range q.items {
		if it.done != nil {
			close(it.done)
		}
		if it.event != nil {
			events = append(events, it)
		}
	}
	q.items = events
	q.bytes = 0
	q.closed = true
	q.mu.Unlock()
	signal(q.more)
}
