package forward

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/limits"
	"github.com/wsproxy/wsproxy/internal/presence"
	"github.com/wsproxy/wsproxy/internal/session"
)

// initPresence makes the presence hub, observing the registry, and its
// gauges.
func (s *Server) initPresence() {
	s.presence = presence.New(s.registry, s.opts.Presence)
	s.metrics.GaugeFunc("wsproxy_presence_watchers", "Presence watchers connected to /ws/events (not members; not in wsproxy_connections).", func() float64 {
		return float64(len(s.presence.Watchers()))
	})
	s.metrics.GaugeFunc("wsproxy_presence_groups", "Groups with presence state: watched now, or in the last 30 s (their history is kept).", func() float64 {
		return float64(s.presence.Watched())
	})
}

// Presence is the server's presence hub (package presence).
func (s *Server) Presence() *presence.Hub { return s.presence }

// Events is the /ws/events handler (SPEC section 11): a watcher of one
// group's joins and leaves, on a WebSocket of its own.
func (s *Server) Events() http.Handler { return http.HandlerFunc(s.serveEventsHTTP) }

// parseEventsParams extracts groupName and the optional since from a raw
// query string.
func parseEventsParams(rawQuery string) (groupName string, since *presence.Since, rej *rejection) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, &rejection{http.StatusBadRequest, "malformed query string", "bad_query"}
	}
	groupName, rej = single(q, "groupName")
	if rej != nil {
		return "", nil, rej
	}
	if !ValidGroupName(groupName) {
		return "", nil, &rejection{http.StatusBadRequest,
			"parameter groupName must be 1-128 bytes of valid UTF-8 without control characters", "bad_group"}
	}
	switch vs := q["since"]; len(vs) {
	case 0:
	case 1:
		sn, err := presence.ParseSince(vs[0])
		if err != nil {
			return "", nil, &rejection{http.StatusBadRequest, err.Error(), "bad_since"}
		}
		since = &sn
	default:
		return "", nil, &rejection{http.StatusBadRequest, "parameter since must be given exactly once", "repeated_since"}
	}
	return groupName, since, nil
}

// serveEventsHTTP accepts a watcher with the same checks, in the same order,
// and the same admission limits as /ws.
func (s *Server) serveEventsHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, &rejection{http.StatusMethodNotAllowed, "method not allowed: use GET with a WebSocket upgrade", "method"})
		return
	}
	groupName, since, rej := parseEventsParams(r.URL.RawQuery)
	if rej == nil {
		rej = checkOrigin(r, s.opts.AllowedOrigins)
	}
	if rej == nil {
		rej = checkUpgrade(r)
	}
	// Authentication (SPEC section 9): the same token rules as /ws, the
	// token allowing groupName; the watcher ends when its token expires.
	// The admin token, in the Authorization header, admits a watcher of
	// any group, with no expiry; any other token goes the usual way.
	var expires time.Time
	if rej == nil && s.opts.Authorize != nil && !s.adminWatcher(r, groupName) {
		_, expires, rej = s.authorize(r, "", groupName)
	}
	if rej != nil {
		s.reject(w, rej)
		return
	}
	// A watcher is a session that is in no group: the same bounded queue,
	// write timeout, keepalive and close handshake as a member's.
	sess, ticket, ok := s.upgrade(w, r, "", groupName)
	if !ok {
		return
	}
	sess.Start()
	unwatch := s.presence.Watch(sess, since)
	if s.closingAll.Load() {
		sess.Close(websocket.StatusGoingAway, "going away")
	}
	go s.serveWatcher(sess, unwatch, ticket, expires)
}

// adminWatcher reports whether r carries the admin token as its
// Authorization: Bearer header (compared in constant time).
func (s *Server) adminWatcher(r *http.Request, groupName string) bool {
	if s.opts.AdminToken == "" {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256([]byte(s.opts.AdminToken))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return false
	}
	s.log.Debug().Str("remote", r.RemoteAddr).Str("sub", "admin token").Str("group", groupName).
		Msg("watcher authorized by the admin token")
	return true
}

// serveWatcher reads from a watcher until its connection ends. A watcher
// sends nothing: a data message closes it with 1008 "policy".
func (s *Server) serveWatcher(sess *session.Session, unwatch func(), ticket *limits.Ticket, expires time.Time) {
	defer s.handlers.Done()
	defer ticket.Release()
	if !expires.IsZero() {
		// A watcher is never inside a message: the expiry closes it at once.
		defer s.expireAt(sess, expires).stop()
	}
	_, r, err := sess.Conn().Reader(context.Background())
	if err == nil {
		_, _ = io.Copy(io.Discard, r)
		sess.Close(websocket.StatusPolicyViolation, "policy")
	} else {
		s.classifyEnd(sess, err)
	}
	unwatch()
	if err == nil {
		drain(sess.Conn())
	}
	sess.ReaderDone()
	sess.Wait()
	if s.log.Debug().Enabled() {
		code, reason, byPeer := sess.CloseStatus()
		s.log.Debug().Str("group", sess.Group).Str("remote", sess.Remote).
			Float64("duration_s", time.Since(sess.Since).Seconds()).
			Int("close_code", int(code)).Str("close_reason", reason).Bool("closed_by_peer", byPeer).
			Msg("watcher closed")
	}
}
