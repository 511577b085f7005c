// Package group is the registry of groups and their members: plain data behind
// one mutex, with no goroutines and no I/O under the lock.
//
// A group exists while it has members. Within a group an id is unique: a new
// session with an id already present replaces the old one, and the caller
// closes the old one.
package group

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/wsproxy/wsproxy/internal/session"
)

// Registry holds every group. All methods are safe for concurrent use.
type Registry struct {
	mu     sync.Mutex
	groups map[string]*Group // guarded by mu
	count  atomic.Int64      // number of groups, for metrics

	// observer, if set (SetObserver, before any join), is told of every
	// join and leave under mu (package presence).
	observer Observer
}

// Observer is told of joins and leaves, under the registry's lock, in the
// order they happen; it must not block or call the registry. Left runs once
// per member that joined and was not replaced, after its close status is
// final (the caller calls leave then).
type Observer interface {
	Joined(s *session.Session, replaced bool)
	Left(s *session.Session)
}

// SetObserver sets the registry's observer. Call it before any join.
func (r *Registry) SetObserver(o Observer) { r.observer = o }

// Observe runs f under the registry's lock with the members of the named
// group (nil if it has none), so that what f sees is consistent with the
// Observer's calls before and after it.
func (r *Registry) Observe(name string, f func(members []*session.Session)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ms []*session.Session
	if g := r.groups[name]; g != nil {
		ms = g.Members()
	}
	f(ms)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{groups: make(map[string]*Group)}
}

// Group is one group. Its member list is a snapshot replaced on every join and
// leave, so fan-out reads it without locking.
type Group struct {
	// Static after construction.
	Name string

	// StreamOrder is held while a streamed message is placed in every
	// receiver's queue, so that all members see streamed messages in the same
	// order. Without it, two senders streaming at once could each wait for a
	// receiver that is busy with the other's message.
	StreamOrder sync.Mutex

	members atomic.Pointer[[]*session.Session] // written under Registry.mu
	byID    map[string]*session.Session        // guarded by Registry.mu
}

// Members returns the current members. The slice is shared: do not modify it.
func (g *Group) Members() []*session.Session {
	if p := g.members.Load(); p != nil {
		return *p
	}
	return nil
}

// Join adds s to the group named s.Group, creating the group if needed. If a
// member with the same id was there, it is returned as replaced and the caller
// closes it. leave removes s again (and the group, if s was its last member);
// it is safe to call more than once and never removes a session that replaced s.
func (r *Registry) Join(s *session.Session) (g *Group, replaced *session.Session, leave func()) {
	g, replaced, leave, _ = r.JoinLimited(s, Limits{})
	return g, replaced, leave
}

// Limits bound the registry (SPEC section 10); 0 is no limit.
type Limits struct {
	MaxGroups  int // groups
	MaxMembers int // members of one group
}

// Why JoinLimited refused a session.
var (
	ErrTooManyGroups = errors.New("too many groups")
	ErrGroupFull     = errors.New("group full")
)

// JoinLimited is Join within lim: a session that would create a group past
// MaxGroups, or be a new member of a group that has MaxMembers, is refused
// (ErrTooManyGroups, ErrGroupFull) and not added. A session replacing a
// member with its id is not a new member.
func (r *Registry) JoinLimited(s *session.Session, lim Limits) (g *Group, replaced *session.Session, leave func(), err error) {
	r.mu.Lock()
	g = r.groups[s.Group]
	switch {
	case g == nil && lim.MaxGroups > 0 && len(r.groups) >= lim.MaxGroups:
		r.mu.Unlock()
		return nil, nil, nil, ErrTooManyGroups
	case g != nil && lim.MaxMembers > 0 && len(g.byID) >= lim.MaxMembers && g.byID[s.ID] == nil:
		r.mu.Unlock()
		return nil, nil, nil, ErrGroupFull
	}
	if g == nil {
		g = &Group{Name: s.Group, byID: make(map[string]*session.Session)}
		r.groups[s.Group] = g
		r.count.Add(1)
	}
	replaced = g.byID[s.ID]
	g.byID[s.ID] = s
	g.publishLocked()
	if r.observer != nil {
		r.observer.Joined(s, replaced != nil)
	}
	r.mu.Unlock()

	var once sync.Once
	return g, replaced, func() { once.Do(func() { r.leave(g, s) }) }, nil
}

func (r *Registry) leave(g *Group, s *session.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.byID[s.ID] != s {
		return // replaced: the newcomer stays
	}
	delete(g.byID, s.ID)
	g.publishLocked()
	if r.observer != nil {
		r.observer.Left(s)
	}
	if len(g.byID) == 0 && r.groups[g.Name] == g {
		delete(r.groups, g.Name)
		r.count.Add(-1)
	}
}

// publishLocked replaces the member snapshot. Order is by id so that listings
// are stable.
func (g *Group) publishLocked() {
	m := make([]*session.Session, 0, len(g.byID))
	for _, s := range g.byID {
		m = append(m, s)
	}
	sort.Slice(m, func(i, j int) bool { return m[i].ID < m[j].ID })
	g.members.Store(&m)
}

// Get returns the group with that name, or nil.
func (r *Registry) Get(name string) *Group {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.groups[name]
}

// Member returns the member of the named group with that id, or nil.
func (r *Registry) Member(groupName, id string) *session.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.groups[groupName]; g != nil {
		return g.byID[id]
	}
	return nil
}

// Groups returns every group, ordered by name.
func (r *Registry) Groups() []*Group {
	r.mu.Lock()
	gs := make([]*Group, 0, len(r.groups))
	for _, g := range r.groups {
		gs = append(gs, g)
	}
	r.mu.Unlock()
	sort.Slice(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
	return gs
}

// Sessions returns every member of every group.
func (r *Registry) Sessions() []*session.Session {
	var all []*session.Session
	for _, g := range r.Groups() {
		all = append(all, g.Members()...)
	}
	return all
}

// Count is the number of groups.
func (r *Registry) Count() int64 { return r.count.Load() }
