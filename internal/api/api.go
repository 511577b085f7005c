// Package api is the admin HTTP API mounted at /api (SPEC section 8): it lists
// groups and connections, delivers messages to a group, a member or everyone,
// and kicks members.
//
// Messages published here go through forward.Server.Publish, so they meet the
// same queues and slow-consumer policy as a member's messages, and a body
// larger than --buffer-bytes is relayed as it is read, never held whole.
//
// Every error is JSON {"error": "..."} with a constant message: request
// input (paths, bodies, headers) is never echoed into responses or logs.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/httpjson"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// Options configure the API.
type Options struct {
	// Token, if not empty, is required on every route as
	// "Authorization: Bearer <Token>".
	Token string
	// MaxMessageBytes refuses larger bodies with 413 (0: no limit).
	MaxMessageBytes int64
	// BodyIdleTimeout fails a publish whose request body makes no progress
	// this long with 408, so that a stuck client cannot hold receivers in
	// the middle of a message (0: no limit).
	BodyIdleTimeout time.Duration
	// Cluster, if not nil, makes the listings and kicks cluster-wide (see
	// cluster.go); nil on a single node.
	Cluster Cluster
}

// api holds what the handlers share. Static after construction.
type api struct {
	fwd       *forward.Server
	opts      Options
	tokenHash [sha256.Size]byte
	log       zerolog.Logger
	metrics   *metrics.Metrics
}

// New returns the API's router, to be mounted at /api. Its routes are relative
// to the mount point.
func New(fwd *forward.Server, opts Options, log zerolog.Logger, m *metrics.Metrics) http.Handler {
	a := &api{fwd: fwd, opts: opts, log: log, metrics: m}
	if opts.Token != "" {
		a.tokenHash = sha256.Sum256([]byte(opts.Token))
	}
	r := chi.NewRouter()
	r.Use(a.count)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Error(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Error(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	// Authentication runs after routing (chi's Group middleware wraps each
	// endpoint), so the request counter can label refusals by route.
	r.Group(func(r chi.Router) {
		r.Use(a.auth)
		r.Get("/groups", a.listGroups)
		r.Get("/groups/{group}", a.getGroup)
		r.Post("/groups/{group}/messages", a.publishGroup)
		r.Post("/groups/{group}/members/{id}/messages", a.publishMember)
		r.Delete("/groups/{group}/members/{id}", a.kick)
		r.Get("/connections", a.listConnections)
		r.Post("/connections/broadcast", a.broadcast)
	})
	return r
}

// count records every request in wsproxy_api_requests_total by route pattern
// and status.
func (a *api) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		if strings.HasSuffix(route, "*") {
			route = "unmatched"
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		a.metrics.APIRequest(route, status)
	})
}

// auth refuses requests without the admin token, if one is set. The token is
// compared through SHA-256 digests in constant time, so neither its content
// nor its length leaks through timing.
func (a *api) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Token == "" || a.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		a.log.Info().Str("remote", r.RemoteAddr).Msg("admin API: request without a valid token refused")
		w.Header().Set("WWW-Authenticate", `Bearer realm="wsproxy"`)
		httpjson.Error(w, http.StatusUnauthorized, "missing or invalid admin token: send Authorization: Bearer <token>")
	})
}

func (a *api) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) == 1
}

// pathParam returns a path parameter, unescaped. chi matches routes against
// r.URL.RawPath when it is set (the path had escapes such as %2F that
// r.URL.Path cannot represent), and then parameters come out escaped;
// otherwise it matches r.URL.Path and they come out decoded already.
func pathParam(r *http.Request, name string) (string, bool) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v, true
	}
	v, err := url.PathUnescape(v)
	return v, err == nil
}

// groupParam returns the {group} parameter, or answers 400.
func groupParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	g, ok := pathParam(r, "group")
	if !ok || !forward.ValidGroupName(g) {
		httpjson.Error(w, http.StatusBadRequest,
			"group in path must be 1-128 bytes of valid UTF-8 without control characters, URL-escaped")
		return "", false
	}
	return g, true
}

// idParam returns the {id} parameter, or answers 400.
func idParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := pathParam(r, "id")
	if !ok || !forward.ValidID(id) {
		httpjson.Error(w, http.StatusBadRequest, "id in path must be 1-128 characters of A-Z a-z 0-9 - _ . ~")
		return "", false
	}
	return id, true
}

// groupSummary is one entry of GET /api/groups.
type groupSummary struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
}

func (a *api) listGroups(w http.ResponseWriter, r *http.Request) {
	if a.opts.Cluster != nil {
		a.listGroupsCluster(w, r)
		return
	}
	groups := a.fwd.Registry().Groups()
	out := make([]groupSummary, 0, len(groups))
	for _, g := range groups {
		// A group can lose its last member between the two reads; a group
		// listed with 0 members is one that just went away.
		out = append(out, groupSummary{Name: g.Name, Members: len(g.Members())})
	}
	httpjson.Write(w, http.StatusOK, struct {
		Groups []groupSummary `json:"groups"`
	}{out})
}

// member is one entry of GET /api/groups/{group}.
type member struct {
	ID             string    `json:"id"`
	ConnectedSince time.Time `json:"connected_since"`
	QueuedBytes    int64     `json:"queued_bytes"`
}

func (a *api) getGroup(w http.ResponseWriter, r *http.Request) {
	name, ok := groupParam(w, r)
	if !ok {
		return
	}
	if a.opts.Cluster != nil {
		a.getGroupCluster(w, r, name)
		return
	}
	g := a.fwd.Registry().Get(name)
	if g == nil {
		httpjson.Error(w, http.StatusNotFound, "no such group")
		return
	}
	ms := g.Members()
	out := make([]member, 0, len(ms))
	for _, s := range ms {
		out = append(out, member{ID: s.ID, ConnectedSince: s.Since.UTC(), QueuedBytes: s.QueuedBytes()})
	}
	httpjson.Write(w, http.StatusOK, struct {
		Name    string   `json:"name"`
		Members []member `json:"members"`
	}{name, out})
}

// connection is one entry of GET /api/connections.
type connection struct {
	Group          string    `json:"group"`
	ID             string    `json:"id"`
	Remote         string    `json:"remote"`
	ConnectedSince time.Time `json:"connected_since"`
	QueuedBytes    int64     `json:"queued_bytes"`
	MessagesIn     int64     `json:"messages_in"`
	BytesIn        int64     `json:"bytes_in"`
	MessagesOut    int64     `json:"messages_out"`
	BytesOut       int64     `json:"bytes_out"`
}

func (a *api) listConnections(w http.ResponseWriter, r *http.Request) {
	if a.opts.Cluster != nil {
		a.listConnectionsCluster(w, r)
		return
	}
	sessions := a.fwd.Registry().Sessions()
	out := make([]connection, 0, len(sessions))
	for _, s := range sessions {
		st := s.Stats()
		out = append(out, connection{
			Group: s.Group, ID: s.ID, Remote: s.Remote,
			ConnectedSince: s.Since.UTC(), QueuedBytes: s.QueuedBytes(),
			MessagesIn: st.MessagesIn, BytesIn: st.BytesIn,
			MessagesOut: st.MessagesOut, BytesOut: st.BytesOut,
		})
	}
	httpjson.Write(w, http.StatusOK, struct {
		Connections []connection `json:"connections"`
	}{out})
}

func (a *api) publishGroup(w http.ResponseWriter, r *http.Request) {
	g, ok := groupParam(w, r)
	if !ok {
		return
	}
	a.publish(w, r, func(ctx context.Context, typ websocket.MessageType, body io.Reader) (int, error) {
		return a.fwd.Publish(ctx, g, "", typ, body)
	})
}

func (a *api) publishMember(w http.ResponseWriter, r *http.Request) {
	g, ok := groupParam(w, r)
	if !ok {
		return
	}
	id, ok := idParam(w, r)
	if !ok {
		return
	}
	a.publish(w, r, func(ctx context.Context, typ websocket.MessageType, body io.Reader) (int, error) {
		return a.fwd.Publish(ctx, g, id, typ, body)
	})
}

func (a *api) broadcast(w http.ResponseWriter, r *http.Request) {
	a.publish(w, r, a.fwd.Broadcast)
}

// publish sends the request body as one message through send and answers 202
// with the number of receivers it was queued for.
func (a *api) publish(w http.ResponseWriter, r *http.Request,
	send func(context.Context, websocket.MessageType, io.Reader) (int, error)) {
	if limit := a.opts.MaxMessageBytes; limit > 0 && r.ContentLength > limit {
		w.Header().Set("Connection", "close") // the body stays unread
		httpjson.Error(w, http.StatusRequestEntityTooLarge, "message larger than --max-message-bytes")
		return
	}
	var body io.Reader = r.Body
	if d := a.opts.BodyIdleTimeout; d > 0 {
		rc := http.NewResponseController(w)
		body = &idleReader{r: r.Body, rc: rc, timeout: d}
		// Leave no deadline behind for the next request on this connection.
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	n, err := send(r.Context(), messageType(r.Header.Get("Content-Type")), body)
	if err != nil {
		a.publishFailed(w, r, err)
		return
	}
	httpjson.Write(w, http.StatusAccepted, struct {
		Receivers int `json:"receivers"`
	}{n})
}

func (a *api) publishFailed(w http.ResponseWriter, r *http.Request, err error) {
	// The body may be partly unread: without this, net/http would try to
	// read the rest before answering, which a stalled client never sends.
	w.Header().Set("Connection", "close")
	switch {
	case errors.Is(err, forward.ErrNoGroup):
		httpjson.Error(w, http.StatusNotFound, "no such group")
	case errors.Is(err, forward.ErrNoMember):
		httpjson.Error(w, http.StatusNotFound, "no such member")
	case errors.Is(err, forward.ErrDraining):
		w.Header().Set("Retry-After", "10")
		httpjson.Error(w, http.StatusServiceUnavailable, "server is shutting down")
	case errors.Is(err, forward.ErrTooBig):
		httpjson.Error(w, http.StatusRequestEntityTooLarge, "message larger than --max-message-bytes")
	case errors.Is(err, forward.ErrInvalidUTF8):
		httpjson.Error(w, http.StatusBadRequest, "a text message (Content-Type text/* or JSON) must be valid UTF-8")
	case errors.Is(err, os.ErrDeadlineExceeded):
		httpjson.Error(w, http.StatusRequestTimeout, "request body made no progress for --message-idle-timeout")
	case r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		a.log.Debug().Err(err).Msg("admin API: publish abandoned by its client")
		httpjson.Error(w, http.StatusBadRequest, "request cancelled")
	default:
		a.log.Debug().Err(err).Msg("admin API: request body could not be read")
		httpjson.Error(w, http.StatusBadRequest, "request body could not be read")
	}
}

// idleReader extends the connection's read deadline before each read, so a
// body that makes no progress for timeout fails with os.ErrDeadlineExceeded.
type idleReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *idleReader) Read(p []byte) (int, error) {
	// Unsupported by the connection (e.g. in some test recorders): then
	// there is no idle limit.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	return b.r.Read(p)
}

// messageType is text for text/* and JSON media types (application/json and
// application/*+json), binary for anything else, including no Content-Type.
func messageType(contentType string) websocket.MessageType {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return websocket.MessageBinary
	}
	if strings.HasPrefix(mt, "text/") || mt == "application/json" || strings.HasSuffix(mt, "+json") {
		return websocket.MessageText
	}
	return websocket.MessageBinary
}

func (a *api) kick(w http.ResponseWriter, r *http.Request) {
	g, ok := groupParam(w, r)
	if !ok {
		return
	}
	id, ok := idParam(w, r)
	if !ok {
		return
	}
	err := a.fwd.Kick(g, id)
	if a.opts.Cluster != nil && (errors.Is(err, forward.ErrNoGroup) || errors.Is(err, forward.ErrNoMember)) {
		err = a.opts.Cluster.KickRemote(r.Context(), g, id)
	}
	switch {
	case errors.Is(err, forward.ErrNoGroup):
		httpjson.Error(w, http.StatusNotFound, "no such group")
	case errors.Is(err, forward.ErrNoMember):
		httpjson.Error(w, http.StatusNotFound, "no such member")
	case errors.Is(err, context.DeadlineExceeded):
		a.log.Warn().Err(err).Msg("admin API: kick: the member's node did not answer")
		httpjson.Error(w, http.StatusGatewayTimeout, "the member's node did not answer in time")
	case err != nil && a.opts.Cluster != nil:
		a.log.Warn().Err(err).Msg("admin API: kick: the cluster is unreachable")
		httpjson.Error(w, http.StatusServiceUnavailable, "the cluster is unreachable from this node")
	case err != nil:
		a.log.Error().Err(err).Msg("admin API: kick failed")
		httpjson.Error(w, http.StatusInternalServerError, "kick failed")
	default:
		a.log.Info().Str("group", g).Str("id", id).Msg("admin API: member kicked")
		w.WriteHeader(http.StatusNoContent)
	}
}
