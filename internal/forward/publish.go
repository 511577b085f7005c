package forward

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/session"
)

// Errors from Publish, Broadcast and Kick.
var (
	ErrNoGroup     = errors.New("no such group")
	ErrNoMember    = errors.New("no such member")
	ErrDraining    = errors.New("server is shutting down")
	ErrTooBig      = errTooBig
	ErrInvalidUTF8 = errInvalidUTF8
)

// Publish delivers one message, read from r, to every member of groupName, or
// only to member id when id is not empty. It goes through the receivers'
// queues and the slow-consumer policy exactly as a member's message does, and
// is relayed as it is read when larger than --buffer-bytes. It returns the
// number of receivers the message was queued for. Waits end when ctx does.
//
// With a Bus that is a Directory (a cluster), the group's members on other
// nodes get it too, also when none is here, and member id may be on another
// node; the count then adds the members the registry places on other nodes
// (approximate: one that leaves meanwhile is counted, one that joins
// meanwhile is not).
func (s *Server) Publish(ctx context.Context, groupName, id string, typ websocket.MessageType, r io.Reader) (int, error) {
	if s.Draining() {
		return 0, ErrDraining
	}
	dir := s.directory()
	remote := 0
	if dir != nil {
		remote = dir.RemoteMembers(groupName)
	}
	var to recipients
	if g := s.registry.Get(groupName); g != nil {
		to = groupRecipients(g)
	} else if remote > 0 {
		to = recipients{busGroups: []string{groupName}}
	} else {
		return 0, ErrNoGroup
	}
	if id != "" {
		switch m := s.registry.Member(groupName, id); {
		case m != nil:
			to.members = []*session.Session{m}
			to.busGroups = nil // here, so nowhere else
			remote = 0
		case dir != nil && dir.HasRemoteMember(groupName, id):
			// Over the bus to the group, for that member only.
			to = recipients{busGroups: []string{groupName}, target: id}
			remote = 1
		default:
			return 0, ErrNoMember
		}
	}
	n, err := s.publish(ctx, to, typ, r)
	if err != nil {
		return n, err
	}
	return n + remote, nil
}

// Broadcast delivers one message, read from r, to every connection of every
// group, as Publish does; with a Directory, on every node (the count is
// then approximate, as Publish's).
func (s *Server) Broadcast(ctx context.Context, typ websocket.MessageType, r io.Reader) (int, error) {
	if s.Draining() {
		return 0, ErrDraining
	}
	to := recipients{groups: s.registry.Groups()}
	for _, g := range to.groups {
		to.members = append(to.members, g.Members()...)
	}
	remote := 0
	if dir := s.directory(); dir != nil {
		names := map[string]bool{}
		for _, g := range to.groups {
			names[g.Name] = true
		}
		for g, n := range dir.RemoteCounts() {
			names[g] = true
			remote += n
		}
		// In name order, as busOpen wants them.
		to.busGroups = slices.Sorted(maps.Keys(names))
	}
	n, err := s.publish(ctx, to, typ, r)
	if err != nil {
		return n, err
	}
	return n + remote, nil
}

func (s *Server) publish(ctx context.Context, to recipients, typ websocket.MessageType, r io.Reader) (int, error) {
	src := &source{r: r, typ: typ, stop: ctx.Done()}
	n, err := s.relay(src, Sender{}, to)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = errTruncated
	}
	return n, err
}

// Kick closes member id of groupName with 4003 "kicked".
func (s *Server) Kick(groupName, id string) error {
	m := s.registry.Member(groupName, id)
	if m == nil {
		if s.registry.Get(groupName) == nil {
			return ErrNoGroup
		}
		return ErrNoMember
	}
	m.Close(session.StatusKicked, "kicked")
	return nil
}
