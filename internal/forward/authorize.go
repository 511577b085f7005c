package forward

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/session"
)

// StatusTokenExpired closes a connection whose token has expired (SPEC
// section 9).
const StatusTokenExpired websocket.StatusCode = 4005

// Authorizer decides whether a handshake may join group under id (empty when
// the request gave none: then the grant's ID is the member id). It is
// called once the request's parameters, Origin and upgrade are valid. A 401
// refusal is answered with WWW-Authenticate: Bearer.
type Authorizer func(r *http.Request, id, group string) (auth.Grant, *auth.Refusal)

// authorize asks s.opts.Authorize about the handshake. It returns the member
// id and when the connection must end (zero: never).
func (s *Server) authorize(r *http.Request, id, group string) (string, time.Time, *rejection) {
	g, ref := s.opts.Authorize(r, id, group)
	if ref != nil {
		ev := s.log.Debug()
		if ref.Status == http.StatusForbidden {
			// A valid token asking for what it does not allow.
			ev = s.log.Info()
		}
		ev.Str("remote", r.RemoteAddr).Str("sub", g.ID).Str("group", group).Str("reason", ref.Reason).
			Int("status", ref.Status).Msg("handshake refused")
		return "", time.Time{}, &rejection{ref.Status, ref.Msg, ref.Reason}
	}
	if id == "" {
		id = g.ID
		if !ValidID(id) {
			return "", time.Time{}, &rejection{http.StatusForbidden,
				"the token's subject is not a valid id (1-128 characters of A-Z a-z 0-9 - _ . ~)", "auth_id"}
		}
	}
	s.log.Debug().Str("remote", r.RemoteAddr).Str("sub", g.ID).Str("group", group).
		Time("expires", g.Expires).Msg("handshake authorized")
	return id, g.Expires, nil
}

// expiry ends a session when its token expires: at the next message
// boundary, or at once if the message in progress has not ended
// --message-idle-timeout after the expiry (at once when that is 0).
type expiry struct {
	sess  *session.Session
	grace time.Duration

	due atomic.Bool // the token has expired; the reader closes at the boundary

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// expireAt arms the expiry of sess at t.
func (s *Server) expireAt(sess *session.Session, t time.Time) *expiry {
	e := &expiry{sess: sess, grace: s.opts.MessageIdleTimeout}
	e.mu.Lock()
	e.timer = time.AfterFunc(time.Until(t), e.fire)
	e.mu.Unlock()
	return e
}

// fire runs at the expiry: a reader between messages is closed now (a
// message starting at this very moment is then abandoned, as for a kick);
// one inside a message closes at its end (see boundary), or after the grace.
func (e *expiry) fire() {
	e.due.Store(true)
	if in, _ := e.sess.Activity(); !in || e.grace <= 0 {
		e.close()
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stopped {
		e.timer = time.AfterFunc(e.grace, e.close)
	}
}

func (e *expiry) close() { e.sess.Close(StatusTokenExpired, "token expired") }

// boundary is called by the reader after each message: it closes the
// session if the token has expired. It reports whether it did.
func (e *expiry) boundary() bool {
	if e == nil || !e.due.Load() {
		return false
	}
	e.close()
	return true
}

// stop disarms the expiry; the reader calls it when it ends.
func (e *expiry) stop() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.stopped = true
	e.timer.Stop()
	e.mu.Unlock()
}
