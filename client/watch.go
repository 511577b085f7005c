package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WatchConfig says which group's presence to watch (docs/protocol.md
// section 11) and how to reconnect.
type WatchConfig struct {
	// Config: URL is the proxy's /ws endpoint (the watcher connects to
	// /ws/events beside it; a URL ending in /ws/events is used as it is);
	// Group is required; ID is not used. TokenSource, Header, HTTPClient and
	// HandshakeTimeout are as for Dial (the admin token may be sent as
	// "Authorization: Bearer" in Header: it watches any group).
	Config
	// Policy decides whether and when to reconnect once a connection ends
	// or an attempt fails; default DefaultPolicy. With NoReconnect, Next
	// returns the first end.
	Policy Policy
	// OnDisconnect, if set, is called from Next each time a connection ends
	// or an attempt fails, with the policy's decision.
	OnDisconnect func(r Retry, delay time.Duration, reconnect bool)
	// MaxEventBytes bounds one event (a snapshot of a big group is the
	// largest); default 16 MiB. A larger one ends Next with ErrTooLarge.
	MaxEventBytes int64
	// Since, if set, is a Cursor from an earlier watcher of the group: the
	// first connection resumes from it (the events after it, or a fresh
	// Snapshot if the proxy no longer has them all).
	Since string
}

// EventType is a presence event's type.
type EventType string

const (
	// Snapshot: who is in the group now (Members). The first event of every
	// connection, unless the watcher resumed with nothing lost; after a
	// reconnect whose gap the proxy could not replay, a fresh one: the
	// member list restarts from it.
	Snapshot EventType = "snapshot"
	// Join: ID joined (At). Replaced: ID was already in and a new connection
	// took its place (close code 4001 for the old one); it never left.
	Join EventType = "join"
	// Leave: ID left (At), with its connection's close Code and Reason.
	Leave EventType = "leave"
)

// Member is one member in a snapshot.
type Member struct {
	ID    string
	Since time.Time // when its current connection joined
}

// Event is one presence event. Seq counts the group's events without gaps
// within an Epoch; a snapshot's Seq is that of the last event it includes.
type Event struct {
	Type  EventType
	Group string
	Epoch string
	Seq   uint64

	Members []Member // Snapshot, ordered by id

	ID       string    // Join, Leave
	At       time.Time // Join, Leave
	Replaced bool      // Join
	Code     int       // Leave: the member's close code (1006: dropped)
	Reason   string    // Leave: the close reason (the proxy's words, or "closed by client", "connection dropped")
}

// Cursor is "<epoch>:<seq>", what a watcher resumes from after this event
// (the since parameter of /ws/events).
func (e Event) Cursor() string { return e.Epoch + ":" + strconv.FormatUint(e.Seq, 10) }

// leftWords says why someone left, by close code: the browser page's table
// (internal/web/index.html, LEFT and LEFT_1008), so that both say the same.
var leftWords = map[int]string{
	1000: "left", 1001: "left (page closed or proxy restarting)", 1006: "lost the connection",
	1009: "was closed: message too big", 1011: "was closed: proxy error", 1013: "was closed: proxy over a limit",
	4002: "was closed: a message was abandoned", 4003: "was kicked by an administrator",
	4004: "was closed: missed messages", 4005: "was closed: token expired",
}

var leftWords1008 = map[string]string{
	"slow consumer": "was too slow to receive", "message stalled": "stalled sending a message",
	"rate limited": "sent too fast", "policy": "did not answer keepalive pings",
}

// Why says in words why a Leave's member left, as the browser page does:
// "left", "lost the connection", "was kicked by an administrator", ...;
// "left (CODE)" for a code without words. Empty for other events.
func (e Event) Why() string {
	if e.Type != Leave {
		return ""
	}
	if w, ok := leftWords1008[e.Reason]; ok && e.Code == 1008 {
		return w
	}
	if w, ok := leftWords[e.Code]; ok {
		return w
	}
	return fmt.Sprintf("left (%d)", e.Code)
}

// wireEvent is an event as the proxy sends it.
type wireEvent struct {
	Type     EventType `json:"type"`
	Group    string    `json:"group"`
	Epoch    string    `json:"epoch"`
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"`
	At       time.Time `json:"at"`
	Replaced bool      `json:"replaced"`
	Code     int       `json:"code"`
	Reason   string    `json:"reason"`
	Members  []struct {
		ID    string    `json:"id"`
		Since time.Time `json:"since"`
	} `json:"members"`
}

// Watcher watches one group's presence and reconnects by its policy,
// resuming where it left off (since): a gap the proxy still has is
// replayed as the events missed, otherwise a fresh Snapshot comes first.
//
// Next belongs to one goroutine at a time; Close may be called from any.
// Reconnecting happens inside Next: a Watcher nobody calls Next on holds
// its connection, or none, and no goroutine of its own but the reader.
type Watcher struct {
	cfg  WatchConfig
	base string // the /ws/events URL with groupName, without since

	// Owned by the caller of Next.
	since     string // cursor of the last event seen
	upAt      time.Time
	nextTry   time.Time
	attempt   int
	streak    int
	lastCause int
	err       error // final: Next returns it from now on

	mu        sync.Mutex
	conn      *Conn // nil between connections
	closed    chan struct{}
	closeOnce sync.Once
}

// Watch connects a watcher of cfg.Group. ctx bounds this first handshake
// only; a refusal is returned (a *HandshakeError: 401, 403, 429 ...), never
// retried.
func Watch(ctx context.Context, cfg WatchConfig) (*Watcher, error) {
	base, err := cfg.eventsURL()
	if err != nil {
		return nil, err
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = 16 << 20
	}
	w := &Watcher{cfg: cfg, base: base, since: cfg.Since, lastCause: -1, closed: make(chan struct{})}
	conn, err := dial(ctx, w.url(), cfg.Config)
	if err != nil {
		return nil, err
	}
	w.conn, w.upAt = conn, time.Now()
	return w, nil
}

func (cfg WatchConfig) eventsURL() (string, error) {
	if cfg.URL == "" || cfg.Group == "" {
		return "", errors.New("client: WatchConfig needs URL and Group")
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
	switch {
	case strings.HasSuffix(u.Path, "/ws/events"):
	case strings.HasSuffix(u.Path, "/ws"):
		u.Path += "/events"
		u.RawPath = ""
	default:
		return "", fmt.Errorf("client: URL path must end in /ws or /ws/events, not %q", u.Path)
	}
	q := u.Query()
	q.Del("id")
	q.Del("since")
	q.Set("groupName", cfg.Group)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Next waits for the next event, for as long as ctx allows (a ctx that ends
// leaves the watcher as it was: the next call goes on waiting). When the
// connection ends it reconnects by the policy, with since set to the last
// event's Cursor, and goes on. It returns an error when the policy stops (a
// *CloseError, a *HandshakeError, ErrConnectionLost ...), or ErrClosed after
// Close; from then on every call returns that error.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		if w.err != nil {
			return Event{}, w.err
		}
		w.mu.Lock()
		conn := w.conn
		w.mu.Unlock()
		if conn == nil {
			if err := w.waitRetry(ctx); err != nil {
				return Event{}, err
			}
			c, err := dial(ctx, w.url(), w.cfg.Config)
			if ctx.Err() != nil {
				if c != nil {
					_ = c.Close()
				}
				return Event{}, ctx.Err()
			}
			if err != nil {
				w.ended(err, 0)
				continue
			}
			w.mu.Lock()
			select {
			case <-w.closed:
				w.mu.Unlock()
				c.closeNow()
				w.err = ErrClosed
				continue
			default:
			}
			w.conn, w.upAt = c, time.Now()
			w.mu.Unlock()
			conn = c
		}
		m, err := conn.Next(ctx)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return Event{}, err
			}
			w.mu.Lock()
			w.conn = nil
			w.mu.Unlock()
			w.ended(err, time.Since(w.upAt))
			continue
		}
		b, err := m.Bytes(w.cfg.MaxEventBytes)
		if err != nil {
			w.fail(conn, err)
			continue
		}
		ev, err := parseEvent(b)
		if err != nil {
			w.fail(conn, err)
			continue
		}
		w.since = ev.Cursor()
		return ev, nil
	}
}

// url is the URL of the next connection: with since once an event was seen.
func (w *Watcher) url() string {
	if w.since == "" {
		return w.base
	}
	return w.base + "&since=" + url.QueryEscape(w.since)
}

// fail ends the watcher on an event it cannot take.
func (w *Watcher) fail(conn *Conn, err error) {
	w.mu.Lock()
	w.conn = nil
	w.mu.Unlock()
	_ = conn.CloseWith(1008, "bad event")
	w.err = err
}

func parseEvent(b []byte) (Event, error) {
	var we wireEvent
	if err := json.Unmarshal(b, &we); err != nil {
		return Event{}, fmt.Errorf("client: presence event: %w", err)
	}
	ev := Event{Type: we.Type, Group: we.Group, Epoch: we.Epoch, Seq: we.Seq, ID: we.ID, At: we.At,
		Replaced: we.Replaced, Code: we.Code, Reason: we.Reason}
	switch we.Type {
	case Snapshot:
		ev.Members = make([]Member, len(we.Members))
		for i, m := range we.Members {
			ev.Members[i] = Member{ID: m.ID, Since: m.Since}
		}
	case Join, Leave:
	default:
		return Event{}, fmt.Errorf("client: presence event of unknown type %q", we.Type)
	}
	return ev, nil
}

// ended asks the policy what to do after err.
func (w *Watcher) ended(err error, upFor time.Duration) {
	select {
	case <-w.closed:
		w.err = ErrClosed
		return
	default:
	}
	if upFor >= StableAfter {
		w.attempt = 0
	}
	r := Retry{Attempt: w.attempt, Err: err, HasTokenSource: w.cfg.TokenSource != nil}
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
	if cause == w.lastCause {
		w.streak++
	} else {
		w.streak = 1
	}
	w.lastCause = cause
	r.Streak = w.streak
	delay, again := w.cfg.Policy(r)
	if w.cfg.OnDisconnect != nil {
		w.cfg.OnDisconnect(r, delay, again)
	}
	if !again {
		w.err = err
		return
	}
	w.attempt++
	w.nextTry = time.Now().Add(delay)
}

// waitRetry waits until the next attempt is due.
func (w *Watcher) waitRetry(ctx context.Context) error {
	d := time.Until(w.nextTry)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-w.closed:
		w.err = ErrClosed
		return ErrClosed
	}
}

// Close closes the connection (1000) and ends the watcher: Next returns
// ErrClosed. It may be called more than once, from any goroutine.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	w.mu.Lock()
	c := w.conn
	w.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}
