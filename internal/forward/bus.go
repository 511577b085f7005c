package forward

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/session"
)

// Bus links this node's groups with the same groups on other nodes (package
// cluster, SPEC section 12). A Server without one is a single node.
//
// To the bus, messages from this node's members (and its admin API) are one
// more receiver: every message is handed to it as it is handed to local
// receivers, in the sender's order, and a Bus may make the sender wait (the
// slow-consumer policy across nodes). Messages from other nodes come back
// through Server.DeliverRemote, one more source.
type Bus interface {
	// Ready reports why a new member cannot join now (nil: it can).
	Ready() error
	// Claim registers id as a member of groupName on this node,
	// cluster-wide, before the connection is upgraded; on error the client
	// is refused with 503. From then on the bus may close the claim's
	// session (c.Close) at any time: replaced on another node (4001), or
	// the claim lost (4004). The returned release gives the claim back; it
	// is called once, when the member has left.
	Claim(groupName, id string, c *Claim) (release func(), err error)
	// Open starts a message to groupName's members on other nodes. The
	// writer holds the group's place on the bus until End or Abort: one
	// message at a time per group, so the caller must open before it
	// places a streamed message locally. For a stream, Open also takes the
	// group's place in the cluster-wide order of streams: every node
	// places streams in the same order (see DeliverRemote's placed).
	Open(m OutMessage) BusWriter
}

// OutMessage is one message leaving this node.
type OutMessage struct {
	Group string
	From  string // the sender's id; empty for the admin API
	To    string // one member only (admin API); empty: every member
	Text  bool
	// Stream: the message is larger than --buffer-bytes and will be
	// placed in receivers' queues as it starts (see Open).
	Stream bool
	// Stop ends any wait for room on the bus (the source went away).
	Stop <-chan struct{}
	// Park and Unpark bracket a wait for room on the bus, as for room in a
	// local queue: the wait is not the sender's fault.
	Park, Unpark func()
}

// BusWriter carries one message to other nodes. Its methods are called by
// one goroutine. A writer whose bus fails goes on accepting bytes: the loss
// is made known to the other nodes' receivers (4004) by the bus, never
// hidden.
type BusWriter interface {
	// Write sends the next bytes of the message, waiting for room as the
	// slow-consumer policy says. It fails only with ErrBusStopped, when
	// Stop closed during a wait.
	Write(p []byte) error
	// End sends the end of the message: receivers get it whole.
	End()
	// Send sends p as the whole message and its end (instead of Write and
	// End). It fails as Write does.
	Send(p []byte) error
	// Abort abandons the message: no receiver gets any of it (4002 for
	// those part-way through it).
	Abort()
}

// ErrBusStopped is a BusWriter's error when its message's Stop closed while
// it waited.
var ErrBusStopped = errors.New("bus wait stopped")

// SetBus links the server to other nodes. Call it before serving.
func (s *Server) SetBus(b Bus) { s.bus = b }

// Claim is a member's registration on the bus. Until the member's session
// exists, a Close is remembered and applied when it is bound.
type Claim struct {
	mu     sync.Mutex
	sess   *session.Session
	code   websocket.StatusCode
	reason string
}

// Close closes the claim's member with code and reason (now, or as soon as
// it has joined).
func (c *Claim) Close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.Close(code, reason)
		return
	}
	if c.code == 0 {
		c.code, c.reason = code, reason
	}
}

func (c *Claim) bind(sess *session.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = sess
	if c.code != 0 {
		sess.Close(c.code, c.reason)
	}
}

// busOpen opens a writer for every group of to (nil without a bus, or when
// the message came from the bus). Groups are opened in name order, as
// recipients lists them, so that two messages to overlapping sets of groups
// cannot each hold a group the other waits for.
func (s *Server) busOpen(src *source, from Sender, to recipients, stream bool) []BusWriter {
	if s.bus == nil || src.remote || len(to.busGroups) == 0 {
		return nil
	}
	ws := make([]BusWriter, 0, len(to.busGroups))
	for _, g := range to.busGroups {
		ws = append(ws, s.bus.Open(OutMessage{
			Group: g, From: from.ID, To: to.target,
			Text: src.typ == websocket.MessageText, Stream: stream,
			Stop: src.stop, Park: from.park, Unpark: from.unpark,
		}))
	}
	return ws
}

func busWrite(ws []BusWriter, p []byte) error {
	for _, w := range ws {
		if err := w.Write(p); err != nil {
			return errAbandoned
		}
	}
	return nil
}

func busSend(ws []BusWriter, p []byte) error {
	for _, w := range ws {
		if err := w.Send(p); err != nil {
			return errAbandoned
		}
	}
	return nil
}

func busEnd(ws []BusWriter) {
	for _, w := range ws {
		w.End()
	}
}

func busAbort(ws []BusWriter) {
	for _, w := range ws {
		w.Abort()
	}
}

// DeliverRemote relays one message that came from another node to this
// node's members of groupName (only to member to, if not empty), read from
// r, through the same path as a local member's message: receivers' queues,
// the slow-consumer policy, streaming past --buffer-bytes. from is the
// sender's id (no member with it gets the message). It returns when the
// message is queued for every receiver, or abandoned: r failing (the origin
// aborted it, or the bus lost part of it) or stop closing abandons it, and
// receivers part-way through it are closed with 4002.
//
// placed, if not nil, is called exactly once, when the message has its
// place in every receiver's queue here (or will have none): the origin of a
// stream waits for that from every node before the group's next stream may
// be placed anywhere.
func (s *Server) DeliverRemote(groupName, from, to string, typ websocket.MessageType, r io.Reader, stop <-chan struct{}, placed func()) error {
	var once sync.Once
	done := func() {
		if placed != nil {
			once.Do(placed)
		}
	}
	defer done()
	g := s.registry.Get(groupName)
	if g == nil {
		done()
		_, err := io.Copy(io.Discard, r)
		return err
	}
	rcpt := groupRecipients(g)
	if to != "" {
		m := s.registry.Member(groupName, to)
		rcpt.members = nil
		if m != nil {
			rcpt.members = []*session.Session{m}
		}
	}
	src := &source{r: r, typ: typ, stop: stop, remote: true, placed: done}
	_, err := s.relay(src, Sender{ID: from}, rcpt)
	done() // a message held whole is in every queue it goes to by now
	if err != nil {
		// Read what is left, so that the caller's next message starts
		// at its beginning.
		_, _ = io.Copy(io.Discard, r)
	}
	return err
}

// CloseGroup closes the members of groupName on this node that connected
// before cutoff (every member if cutoff is zero) with code and reason. A
// member that came later cannot have missed what the caller is closing the
// group for.
func (s *Server) CloseGroup(groupName string, cutoff time.Time, code websocket.StatusCode, reason string) {
	if g := s.registry.Get(groupName); g != nil {
		for _, m := range g.Members() {
			if cutoff.IsZero() || m.Since.Before(cutoff) {
				m.Close(code, reason)
			}
		}
	}
}

// CloseAll closes every member of every group on this node with code and
// reason.
func (s *Server) CloseAll(code websocket.StatusCode, reason string) {
	for _, m := range s.registry.Sessions() {
		m.Close(code, reason)
	}
}

// LocalGroups is the names of the groups with a member on this node.
func (s *Server) LocalGroups() []string {
	gs := s.registry.Groups()
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Name
	}
	return names
}

// HasGroup reports whether groupName has a member on this node.
func (s *Server) HasGroup(groupName string) bool { return s.registry.Get(groupName) != nil }

// busGroupNames is the names of gs, for recipients.busGroups.
func busGroupNames(gs []*group.Group) []string {
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Name
	}
	return names
}
