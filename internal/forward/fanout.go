package forward

import (
	"errors"
	"sync/atomic"

	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/session"
)

// Sender names where a message comes from: a member of a group on this node,
// or the admin API (the zero Sender). Whatever the source, a message goes
// through sendBuf or openStream, under the same rules.
type Sender struct {
	// ID is the sending member's id: no member with this id gets the
	// message, whichever connection holds the id now. Empty for the API.
	ID string
	// sess is the sender's session when it is a member on this node: it is
	// parked while the message waits for receivers (see session.Park).
	sess *session.Session
}

// MemberSender is the Sender for a message from member sess.
func MemberSender(sess *session.Session) Sender { return Sender{ID: sess.ID, sess: sess} }

func (f Sender) park() {
	if f.sess != nil {
		f.sess.Park()
	}
}

func (f Sender) unpark() {
	if f.sess != nil {
		f.sess.Unpark()
	}
}

// held records what the sender's unfinished message holds of the memory
// budget (see session.SetHeld).
func (f Sender) held(n int64) {
	if f.sess != nil {
		f.sess.SetHeld(n)
	}
}

// pinned is what the sender's messages pin of the memory budget (nil for
// the API).
func (f Sender) pinned() *atomic.Int64 {
	if f.sess != nil {
		return f.sess.Pinned()
	}
	return nil
}

// recipients are who a message goes to, fixed when the message starts (SPEC
// section 3: the members connected when it starts). A member that leaves
// meanwhile is skipped; one that joins meanwhile does not get it.
type recipients struct {
	groups  []*group.Group     // whose stream order a streamed message takes, in name order
	members []*session.Session // shared snapshot: never modified
	// With a bus: the groups whose members on other nodes get the message
	// too, in name order, and the one member it is for (admin API), if
	// any.
	busGroups []string
	target    string
}

// groupRecipients is every member of g now, on this node and others.
func groupRecipients(g *group.Group) recipients {
	return recipients{groups: []*group.Group{g}, members: g.Members(), busGroups: []string{g.Name}}
}

// each calls f for every recipient other than the sender.
func (r recipients) each(from Sender, f func(*session.Session)) {
	for _, m := range r.members {
		if from.ID == "" || m.ID != from.ID {
			f(m)
		}
	}
}

// sendBuf delivers a whole message to every recipient but its sender, as the
// slow-consumer policy says, and returns how many took it. It takes over the
// caller's reference to b.
//
// Once begun, a delivery is never left half done: whatever happens to the
// sender meanwhile (kicked, replaced, dropped, shut down), each recipient
// either gets the message or is closed. Under backpressure a wait for room
// ends when the receiver takes the message or is closed (evicted after
// accepting nothing for --write-timeout, or closed for any other reason).
func (s *Server) sendBuf(from Sender, to recipients, b *message.Buf) int {
	it := session.Item{Buf: b, Enqueued: session.Now()}
	// One reference per receiver, taken in one go rather than one atomic
	// operation each (receivers' writers release theirs meanwhile): more
	// than there can be receivers (each is an open socket), the rest given
	// back at the end with the caller's.
	const refs = 1 << 30
	b.Retain(refs)
	delivered := 0
	to.each(from, func(m *session.Session) {
		if s.deliver(from, m, it) {
			delivered++
		}
	})
	b.ReleaseN(refs - delivered + 1)
	return delivered
}

// deliver queues it for m as the slow-consumer policy says. It reports
// whether m took it; if not, m is closed or closing, and the caller keeps the
// item's reference.
func (s *Server) deliver(from Sender, m *session.Session, it session.Item) bool {
	err := m.TryPush(it)
	if err == nil {
		return true
	}
	if errors.Is(err, session.ErrClosed) {
		return false
	}
	if s.opts.SlowConsumer == Disconnect {
		m.Evict(session.EvictQueueFull)
		return false
	}
	from.park()
	defer from.unpark()
	return m.Push(it, nil) == nil
}

// placement is one receiver of a streamed message.
type placement struct {
	m   *session.Session
	cur *message.Cursor
}

// openStream places st in the queue of every recipient but its sender and
// returns where it went. It holds the recipients' groups' stream order while
// it does, so that all receivers meet concurrent streams in one order (see
// group.Group.StreamOrder). A stream item takes no queue bytes, so placing it
// never waits.
func (s *Server) openStream(from Sender, to recipients, st *message.Stream) []placement {
	var placed []placement
	for _, g := range to.groups {
		g.StreamOrder.Lock()
	}
	now := session.Now()
	to.each(from, func(m *session.Session) {
		cur := st.Attach()
		if err := m.TryPush(session.Item{Cursor: cur, Enqueued: now}); err != nil {
			cur.Detach()
			if !errors.Is(err, session.ErrClosed) {
				// Never silently: a receiver that cannot take the message
				// is closed. (A stream item always fits: a safety net.)
				m.Evict(session.EvictQueueFull)
			}
			return
		}
		placed = append(placed, placement{m, cur})
	})
	for _, g := range to.groups {
		g.StreamOrder.Unlock()
	}
	return placed
}

// holdsOthers reports whether a streamed message holds other messages back:
// some receiver has written all of it that has arrived and has another
// message queued behind it.
func holdsOthers(placed []placement) bool {
	for _, p := range placed {
		if p.cur.Waiting() && p.m.Pending() > 1 {
			return true
		}
	}
	return false
}
