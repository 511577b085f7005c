// Package presence tells watchers who is in a group (SPEC section 11;
// docs/protocol.md "Presence"): a snapshot of the members, then one event per
// join and per leave, on a WebSocket of its own (/ws/events), so that the
// data connection stays byte for byte what members send.
//
// A Hub observes the group registry (group.Observer): the registry calls it
// under its lock on every join and leave, so events come in the order the
// registry saw them, and a snapshot taken under the same lock (Watch) is
// consistent with the events that follow it. When no group is watched, a
// join or a leave costs one atomic load; the message path is not touched.
//
// Presence state (the members, the sequence, a bounded history) exists for a
// group while it has watchers, and for Linger after its last watcher left,
// so that a watcher that reconnects at once can resume with ?since=. It is
// kept apart from the registry: a watched group with no members has no
// registry group, and watchers never count as members.
package presence

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/session"
)

// Defaults for Options.
const (
	DefaultHistory = 256
	DefaultLinger  = 30 * time.Second
)

// Options bound a hub.
type Options struct {
	// History is how many events per group are kept for ?since= replay
	// (0: DefaultHistory).
	History int
	// Linger is how long a group's presence state outlives its last watcher
	// (0: DefaultLinger; negative: not at all).
	Linger time.Duration
}

// Hub is every watched group's presence state. All methods are safe for
// concurrent use.
type Hub struct {
	// Static after construction.
	reg     *group.Registry
	history int
	linger  time.Duration
	process string // random per process: part of every epoch

	// active counts the groups with presence state: 0 means a join or a
	// leave has nothing to do.
	active atomic.Int64

	// mu is taken after the registry's lock, never before it.
	mu       sync.Mutex
	groups   map[string]*state // guarded by mu
	watchers map[*session.Session]*state
	epochs   uint64       // states created, for epochs
	remote   RemoteLister // members on other nodes; nil on a single node
}

// RemoteMember is a member of a group on another node (package cluster).
type RemoteMember struct {
	ID    string
	Since time.Time
	// Holder names the node holding it; never 0 (0 is this node).
	Holder uint64
}

// RemoteLister lists group's members on other nodes. The hub calls it under
// the registry's lock and its own: it must take neither, nor block.
type RemoteLister func(group string) []RemoteMember

// state is one watched group's presence. Guarded by Hub.mu.
type state struct {
	name     string
	epoch    string
	seq      uint64
	members  map[string]holding // by id
	hist     []*message.Buf     // the last events, oldest first: hist[i] has seq histSeq+i
	histSeq  uint64
	watchers map[*session.Session]struct{}
	linger   *time.Timer
}

// holding is where and since when a member is in a group: on this node
// (holder 0) or on another.
type holding struct {
	since  time.Time
	holder uint64
}

// New returns a hub observing reg, and sets it as reg's observer.
func New(reg *group.Registry, opts Options) *Hub {
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Linger == 0 {
		opts.Linger = DefaultLinger
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	h := &Hub{
		reg:      reg,
		history:  opts.History,
		linger:   opts.Linger,
		process:  hex.EncodeToString(b[:]),
		groups:   make(map[string]*state),
		watchers: make(map[*session.Session]*state),
	}
	reg.SetObserver(h)
	return h
}

// Since is a position in a group's event stream: the epoch and the seq of
// the last event the watcher saw.
type Since struct {
	Epoch string
	Seq   uint64
}

// ErrBadSince is returned by ParseSince.
var ErrBadSince = errors.New("parameter since must be <epoch>:<seq>, as the last event seen")

// ParseSince parses "<epoch>:<seq>".
func ParseSince(s string) (Since, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i > 64 {
		return Since{}, ErrBadSince
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return Since{}, ErrBadSince
	}
	return Since{Epoch: s[:i], Seq: n}, nil
}

// The events (docs/protocol.md "Presence"). Times are RFC 3339 UTC.
type member struct {
	ID    string `json:"id"`
	Since string `json:"since"`
}

type snapshotEvent struct {
	Type    string   `json:"type"`
	Group   string   `json:"group"`
	Epoch   string   `json:"epoch"`
	Seq     uint64   `json:"seq"`
	Members []member `json:"members"`
}

type joinEvent struct {
	Type     string `json:"type"`
	Group    string `json:"group"`
	Epoch    string `json:"epoch"`
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	At       string `json:"at"`
	Replaced bool   `json:"replaced"`
}

type leaveEvent struct {
	Type   string `json:"type"`
	Group  string `json:"group"`
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
	ID     string `json:"id"`
	At     string `json:"at"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// encode makes a text message of v, with one reference.
func encode(v any) *message.Buf {
	p, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings and numbers
	}
	b := message.GetBuf(len(p))
	b.B = append(b.B, p...)
	b.Type = websocket.MessageText
	return b
}

// Joined implements group.Observer.
func (h *Hub) Joined(s *session.Session, replaced bool) {
	if h.active.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.groups[s.Group]
	if st == nil {
		return
	}
	// Replacing a member on another node is a replacement too.
	_, was := st.members[s.ID]
	st.members[s.ID] = holding{since: s.Since}
	st.seq++
	h.emit(st, encode(joinEvent{Type: "join", Group: st.name, Epoch: st.epoch, Seq: st.seq,
		ID: s.ID, At: stamp(time.Now()), Replaced: replaced || was}))
}

// Left implements group.Observer.
func (h *Hub) Left(s *session.Session) {
	if h.active.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.groups[s.Group]
	if st == nil {
		return
	}
	if m, ok := st.members[s.ID]; ok && m.holder != 0 {
		return // replaced by a member on another node: still there
	}
	code, reason := LeaveStatus(s)
	delete(st.members, s.ID)
	st.seq++
	h.emit(st, encode(leaveEvent{Type: "leave", Group: st.name, Epoch: st.epoch, Seq: st.seq,
		ID: s.ID, At: stamp(time.Now()), Code: code, Reason: reason}))
}

// LeaveStatus is the code and reason a leave event carries: the session's
// close status. A reason the proxy chose is one of its constant texts (SPEC
// section 6); a client's own close reason is its input, and is not passed
// on: the event says "closed by client" (or "connection dropped" for 1006).
func LeaveStatus(s *session.Session) (int, string) {
	code, reason, byPeer := s.CloseStatus()
	switch {
	case code == 0, code == websocket.StatusNoStatusRcvd && !byPeer:
		return int(websocket.StatusAbnormalClosure), "connection dropped"
	case !byPeer:
		return int(code), reason
	case code == websocket.StatusAbnormalClosure:
		return int(code), "connection dropped"
	}
	return int(code), "closed by client"
}

// emit records ev (taking its reference) in st's history and queues it for
// every watcher of st. A watcher whose queue has no room is evicted (1008
// slow consumer): the hub never waits for a watcher.
func (h *Hub) emit(st *state, ev *message.Buf) {
	if len(st.hist) == h.history {
		st.hist[0].Release()
		copy(st.hist, st.hist[1:])
		st.hist = st.hist[:len(st.hist)-1]
		st.histSeq++
	}
	if len(st.hist) == 0 {
		st.histSeq = st.seq
	}
	st.hist = append(st.hist, ev)
	for w := range st.watchers {
		push(w, ev)
	}
}

func push(w *session.Session, ev *message.Buf) {
	ev.Retain(1)
	switch err := w.TryPush(session.Item{Buf: ev, Enqueued: session.Now()}); {
	case err == nil:
	case errors.Is(err, session.ErrFull):
		ev.Release()
		w.Evict(session.EvictQueueFull)
	default:
		ev.Release()
	}
}

// Watch adds w as a watcher of the group named w.Group and queues what it
// must get first: the events after since, if the hub still has every one of
// them in the same epoch, otherwise a snapshot. Call the returned function
// once when w ends.
func (h *Hub) Watch(w *session.Session, since *Since) (unwatch func()) {
	h.reg.Observe(w.Group, func(members []*session.Session) {
		h.mu.Lock()
		defer h.mu.Unlock()
		st := h.groups[w.Group]
		if st == nil {
			h.epochs++
			st = &state{
				name:     w.Group,
				epoch:    h.process + "-" + strconv.FormatUint(h.epochs, 10),
				members:  make(map[string]holding, len(members)),
				watchers: make(map[*session.Session]struct{}),
			}
			if h.remote != nil {
				for _, m := range h.remote(w.Group) {
					st.members[m.ID] = holding{m.Since, m.Holder}
				}
			}
			for _, m := range members {
				st.members[m.ID] = holding{since: m.Since}
			}
			h.groups[w.Group] = st
			h.active.Add(1)
		}
		if st.linger != nil {
			st.linger.Stop()
			st.linger = nil
		}
		if !h.replay(st, w, since) {
			ms := make([]member, 0, len(st.members))
			for id, m := range st.members {
				ms = append(ms, member{ID: id, Since: stamp(m.since)})
			}
			sortMembers(ms)
			ev := encode(snapshotEvent{Type: "snapshot", Group: st.name, Epoch: st.epoch, Seq: st.seq, Members: ms})
			push(w, ev)
			ev.Release()
		}
		st.watchers[w] = struct{}{}
		h.watchers[w] = st
	})
	var once sync.Once
	return func() { once.Do(func() { h.unwatch(w) }) }
}

// replay queues the events after since for w, if st has all of them.
func (h *Hub) replay(st *state, w *session.Session, since *Since) bool {
	if since == nil || since.Epoch != st.epoch || since.Seq > st.seq {
		return false
	}
	if since.Seq == st.seq {
		return true // nothing missed
	}
	if len(st.hist) == 0 || since.Seq+1 < st.histSeq {
		return false
	}
	for _, ev := range st.hist[since.Seq+1-st.histSeq:] {
		push(w, ev)
	}
	return true
}

func (h *Hub) unwatch(w *session.Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.watchers[w]
	if st == nil {
		return
	}
	delete(h.watchers, w)
	delete(st.watchers, w)
	if len(st.watchers) > 0 {
		return
	}
	if h.linger < 0 {
		h.dropLocked(st)
		return
	}
	st.linger = time.AfterFunc(h.linger, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(st.watchers) == 0 && h.groups[st.name] == st {
			h.dropLocked(st)
		}
	})
}

func (h *Hub) dropLocked(st *state) {
	delete(h.groups, st.name)
	h.active.Add(-1)
	for _, ev := range st.hist {
		ev.Release()
	}
	st.hist = nil
	if st.linger != nil {
		st.linger.Stop()
		st.linger = nil
	}
}

// Watchers returns every watcher, for shutdown.
func (h *Hub) Watchers() []*session.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := make([]*session.Session, 0, len(h.watchers))
	for w := range h.watchers {
		ws = append(ws, w)
	}
	return ws
}

// Close drops every group's state, releasing its history (for shutdown,
// once every watcher has ended).
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.groups {
		h.dropLocked(st)
	}
}

// Watched is the number of groups with presence state.
func (h *Hub) Watched() int64 { return h.active.Load() }

func sortMembers(ms []member) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
}

// SetRemote makes the hub cover members on other nodes too (a cluster):
// snapshots include what list returns, and RemoteJoined and RemoteLeft
// report their changes. Groups watched already get their remote members as
// joins.
func (h *Hub) SetRemote(list RemoteLister) {
	h.reg.Observe("", func([]*session.Session) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.remote = list
		for _, st := range h.groups {
			for _, m := range list(st.name) {
				h.remoteJoinedLocked(st, m)
			}
		}
	})
}

// RemoteJoined reports that member m joined group on another node (or
// moved there: a replacement). A report of what the hub knows already is
// ignored, so the same join may be reported more than once.
func (h *Hub) RemoteJoined(group string, m RemoteMember) {
	if h.active.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.groups[group]; st != nil {
		h.remoteJoinedLocked(st, m)
	}
}

func (h *Hub) remoteJoinedLocked(st *state, m RemoteMember) {
	old, was := st.members[m.ID]
	if was && old.holder == m.Holder && old.since.Equal(m.Since) {
		return // known
	}
	st.members[m.ID] = holding{m.Since, m.Holder}
	st.seq++
	h.emit(st, encode(joinEvent{Type: "join", Group: st.name, Epoch: st.epoch, Seq: st.seq,
		ID: m.ID, At: stamp(time.Now()), Replaced: was}))
}

// RemoteLeft reports that member id of group left, on whichever other node
// held it; a member held here is not touched (its leave comes from the
// registry). Its close status is known only where it was: the leave
// carries code 0, "left on another node".
func (h *Hub) RemoteLeft(group, id string) {
	if h.active.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.groups[group]
	if st == nil {
		return
	}
	if m, ok := st.members[id]; !ok || m.holder == 0 {
		return
	}
	delete(st.members, id)
	st.seq++
	h.emit(st, encode(leaveEvent{Type: "leave", Group: st.name, Epoch: st.epoch, Seq: st.seq,
		ID: id, At: stamp(time.Now()), Code: 0, Reason: RemoteLeaveReason}))
}

// RemoteLeaveReason is the reason of a leave of a member on another node.
const RemoteLeaveReason = "left on another node"
