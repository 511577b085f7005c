package forward

import (
	"context"
	"errors"
	"io"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/group"
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
func (s *Server) Publish(ctx context.Context, groupName, id string, typ websocket.MessageType, r io.Reader) (int, error) {
	if s.Draining() {
		return 0, ErrDraining
	}
	g := s.registry.Get(groupName)
	if g == nil {
		return 0, ErrNoGroup
	}
	var only *session.Session
	if id != "" {
		if only = s.registry.Member(groupName, id); only == nil {
			return 0, ErrNoMember
		}
	}
	return s.publish(ctx, target{groups: []*group.Group{g}}, only, typ, r)
}

// Broadcast delivers one message, read from r, to every connection of every
// group, as Publish does.
func (s *Server) Broadcast(ctx context.Context, typ websocket.MessageType, r io.Reader) (int, error) {
	if s.Draining() {
		return 0, ErrDraining
	}
	return s.publish(ctx, target{groups: s.registry.Groups()}, nil, typ, r)
}

func (s *Server) publish(ctx context.Context, t target, only *session.Session, typ websocket.MessageType, r io.Reader) (int, error) {
	src := &source{r: r, typ: typ, stop: ctx.Done()}
	n, err := s.relay(src, t, only)
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
