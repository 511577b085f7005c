// Package forward accepts WebSocket clients on /ws, reads every message they
// send and hands it to the other members of their group.
//
// The net/http handler validates the handshake, upgrades, joins the group and
// hands the connection to a reader goroutine owned by the Server, which reads
// messages until the connection ends. Every message, from a member or from
// the admin API, reaches receivers through one delivery path (sendBuf for a
// message held whole, openStream for one relayed as it arrives) and only
// through their session's queue. A reader never writes to another client's
// socket, and waits on other clients only as the slow-consumer policy says.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/httpjson"
	"github.com/wsproxy/wsproxy/internal/limits"
	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/presence"
	"github.com/wsproxy/wsproxy/internal/session"
)

// Policy is what happens when a receiver's queue is full (SPEC section 4).
type Policy int

const (
	// Backpressure makes the sender wait; a receiver that accepts no bytes
	// for the write timeout is evicted.
	Backpressure Policy = iota
	// Disconnect evicts a receiver whose queue is full at once.
	Disconnect
)

func (p Policy) String() string {
	if p == Disconnect {
		return "disconnect"
	}
	return "backpressure"
}

// ParsePolicy parses "backpressure" or "disconnect".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "backpressure":
		return Backpressure, nil
	case "disconnect":
		return Disconnect, nil
	}
	return 0, fmt.Errorf("slow-consumer policy must be backpressure or disconnect")
}

// Options are the forwarding settings (SPEC section 7).
type Options struct {
	MaxMessageBytes    int64 // 0: no limit
	BufferBytes        int   // messages larger than this are streamed
	MessageIdleTimeout time.Duration
	SendQueueBytes     int64
	SlowConsumer       Policy
	WriteTimeout       time.Duration
	PingInterval       time.Duration
	PingTimeout        time.Duration
	AllowedOrigins     []string
	// CloseGrace bounds the wait for a client's answer to our close frame.
	CloseGrace time.Duration

	// Limits (SPEC section 10; docs/protocol.md "Limits"). 0 is no limit.
	MaxGroups          int
	MaxMembersPerGroup int
	MessageRate        float64 // messages per second a connection may send
	MessageBurst       int
	ByteRate           float64 // bytes per second a connection may send
	ByteBurst          int
	RateLimitClose     bool // over a rate: close 1008 instead of throttling
	// MemoryBudget bounds the memory messages pin, process-wide (see
	// memory.go).
	MemoryBudget int64
	// Admission limits connections before the upgrade (SPEC section 10).
	Admission limits.AdmitOptions
	// Authorize, if set, must allow every handshake (SPEC section 9); the
	// id parameter is then optional.
	Authorize Authorizer
	// AdminToken, if set, also admits a watcher of any group on /ws/events
	// that sends "Authorization: Bearer <AdminToken>" (compared in constant
	// time), whatever Authorize would say. It never admits a member on /ws.
	AdminToken string

	// Presence bounds /ws/events (SPEC section 11; zero: the defaults).
	Presence presence.Options
}

// Server is the /ws handler and the owner of every session.
type Server struct {
	// Static after construction.
	opts     Options
	log      zerolog.Logger
	metrics  *metrics.Metrics
	registry *group.Registry
	rings    *message.RingPool
	budget   *message.Budget // nil: no memory limit
	limits   group.Limits
	admit    *limits.Admission  // nil: every admission limit off
	refusals *limits.LogLimiter // refusals are logged at a bounded rate
	presence *presence.Hub      // watchers of /ws/events (events.go)
	bus      Bus                // other nodes (bus.go); nil: a single node

	// draining is set once, under mu; handlers counts connections that
	// passed the draining check under mu, so Shutdown can wait for all.
	mu       sync.Mutex
	draining atomic.Bool
	handlers sync.WaitGroup

	closingAll atomic.Bool // set before Shutdown closes every session
	reclaiming atomic.Bool // a reclaim loop runs (memory.go)
}

// NewServer returns a server. It registers its gauges on m.
func NewServer(opts Options, log zerolog.Logger, m *metrics.Metrics) *Server {
	s := &Server{
		opts:     opts,
		log:      log,
		metrics:  m,
		registry: group.NewRegistry(),
		limits:   group.Limits{MaxGroups: opts.MaxGroups, MaxMembers: opts.MaxMembersPerGroup},
		admit:    limits.NewAdmission(opts.Admission),
		refusals: limits.NewLogLimiter(time.Second),
	}
	s.initPresence()
	if s.admit != nil {
		m.GaugeFunc("wsproxy_admitted_connections", "Connections holding an admission slot (--max-connections): open ones and handshakes in progress.", func() float64 {
			return float64(s.admit.Open())
		})
	}
	s.budget = message.NewBudget(opts.MemoryBudget, s.reclaim)
	// A stream's ring holds two thresholds' worth: the buffered head plus
	// as much again in flight.
	s.rings = message.NewRingPool(2*opts.BufferBytes, s.budget)
	m.GaugeFunc("wsproxy_groups", "Groups with at least one member.", func() float64 {
		return float64(s.registry.Count())
	})
	m.GaugeFunc("wsproxy_memory_budget_bytes", "The memory budget for messages (--memory-limit); 0: none.", func() float64 {
		return float64(s.budget.Limit())
	})
	m.GaugeFunc("wsproxy_memory_used_bytes", "Memory messages pin now, counted against the budget.", func() float64 {
		return float64(s.budget.Used())
	})
	m.GaugeFunc("wsproxy_memory_waiting", "Readers waiting for the memory budget.", func() float64 {
		n, _ := s.budget.Waiting()
		return float64(n)
	})
	m.GaugeFunc("wsproxy_queued_bytes", "Bytes queued for receivers or being written to them.", func() float64 {
		var n int64
		for _, ss := range s.registry.Sessions() {
			n += ss.QueuedBytes()
		}
		return float64(n)
	})
	return s
}

// Registry is the server's group registry.
func (s *Server) Registry() *group.Registry { return s.registry }

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) reject(w http.ResponseWriter, rej *rejection) {
	s.metrics.Rejected(rej.reason)
	rej.setHeader(w.Header())
	httpjson.Error(w, rej.status, rej.msg)
}

// refuse answers a connection the admission limits refused: the status, a
// Retry-After header and a JSON body, and the connection is closed (a
// refused client must not keep a descriptor as an idle keep-alive
// connection); counted by reason, and logged at most once a second per
// reason (a flood must not become a log flood).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, ref *limits.Refusal) {
	s.metrics.Rejected(ref.Reason)
	w.Header().Set("Retry-After", strconv.Itoa(ref.RetryAfterSeconds()))
	w.Header().Set("Connection", "close")
	httpjson.Error(w, ref.Status, ref.Msg)
	if ok, suppressed := s.refusals.Allow(ref.Reason); ok {
		s.log.Warn().Str("reason", ref.Reason).Int("status", ref.Status).
			Stringer("client", limits.ClientIP(r, s.opts.Admission.TrustedProxies)).
			Int("suppressed", suppressed).Msg("connection refused")
	}
}

// ServeHTTP serves /ws.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, &rejection{http.StatusMethodNotAllowed, "method not allowed: use GET with a WebSocket upgrade", "method"})
		return
	}
	id, groupName, rej := parseParams(r.URL.RawQuery, s.opts.Authorize != nil)
	if rej == nil {
		rej = checkOrigin(r, s.opts.AllowedOrigins)
	}
	if rej == nil {
		rej = checkUpgrade(r)
	}
	var expires time.Time
	if rej == nil && s.opts.Authorize != nil {
		id, expires, rej = s.authorize(r, id, groupName)
	}
	if rej != nil {
		s.reject(w, rej)
		return
	}
	claim, release, rej := s.claim(groupName, id)
	if rej != nil {
		s.reject(w, rej)
		return
	}
	sess, ticket, ok := s.upgrade(w, r, id, groupName)
	if !ok {
		release()
		return
	}
	g, replaced, leave, err := s.registry.JoinLimited(sess, s.limits)
	if err != nil {
		release()
		s.refuseMember(sess, err, ticket)
		return
	}
	if claim != nil {
		claim.bind(sess)
		local := leave
		leave = func() { local(); release() }
	}
	if replaced != nil {
		replaced.Close(session.StatusReplaced, "replaced")
	}
	s.metrics.Connected()
	sess.Start()
	if s.log.Debug().Enabled() {
		sess.Log().Debug().Str("remote", sess.Remote).Msg("connected")
	}
	if s.closingAll.Load() {
		sess.Close(websocket.StatusGoingAway, "going away")
	}
	// The connection is hijacked: net/http is done with it. Its goroutine,
	// whose stack grew deep serving the handshake, ends here; a fresh one
	// with a small stack reads for as long as the connection lasts.
	go s.serve(sess, g, leave, ticket, expires)
}

// claim registers the joining member with the bus, if there is one. Without
// a bus it returns a nil claim and a release that does nothing.
func (s *Server) claim(groupName, id string) (*Claim, func(), *rejection) {
	if s.bus == nil {
		return nil, func() {}, nil
	}
	if err := s.bus.Ready(); err != nil {
		return nil, nil, &rejection{http.StatusServiceUnavailable, "cluster not ready: " + err.Error(), "bus"}
	}
	c := &Claim{}
	release, err := s.bus.Claim(groupName, id, c)
	if err != nil {
		return nil, nil, &rejection{http.StatusServiceUnavailable, "cluster not ready: " + err.Error(), "bus"}
	}
	return c, release, nil
}

// Ready reports why the server cannot take new members now (nil: it can):
// draining, or its bus is not ready.
func (s *Server) Ready() error {
	if s.Draining() {
		return ErrDraining
	}
	if s.bus != nil {
		return s.bus.Ready()
	}
	return nil
}

// upgrade takes an admission slot for a handshake that passed its checks,
// counts the connection in for Shutdown, upgrades it and makes its session
// (not started). On false the client has had its answer and nothing is
// held. The caller gives the ticket back when the connection ends.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, id, groupName string) (*session.Session, *limits.Ticket, bool) {
	ticket, refusal := s.admit.Admit(r)
	if refusal != nil {
		s.refuse(w, r, refusal)
		return nil, nil, false
	}
	if !s.track() {
		ticket.Release()
		s.reject(w, &rejection{http.StatusServiceUnavailable, "server is shutting down", "draining"})
		return nil, nil, false
	}
	hw := hijack.NewResponseWriter(w, s.opts.WriteTimeout)
	conn, err := websocket.Accept(hw, r, &websocket.AcceptOptions{InsecureSkipVerify: true, Subprotocols: subprotocols})
	if err != nil {
		ticket.Release()
		s.handlers.Done()
		s.metrics.Rejected("accept")
		s.log.Debug().Err(err).Msg("websocket accept failed")
		return nil, nil, false
	}
	// The proxy enforces --max-message-bytes itself, so that the close
	// frame carries its own constant reason (and a watcher refuses any data
	// message, whatever its size).
	conn.SetReadLimit(-1)
	sess := session.New(conn, hw.Conn(), id, groupName, session.Config{
		QueueBytes:   s.opts.SendQueueBytes,
		WriteTimeout: s.opts.WriteTimeout,
		PingInterval: s.opts.PingInterval,
		PingTimeout:  s.opts.PingTimeout,
		CloseGrace:   s.opts.CloseGrace,
	}, s.log, s.metrics)
	return sess, ticket, true
}

// refuseMember closes a session the registry refused (SPEC section 10:
// 1013 right after the upgrade, which a browser can see, unlike a refused
// handshake).
func (s *Server) refuseMember(sess *session.Session, err error, ticket *limits.Ticket) {
	reason, label := "group full", "group_full"
	if errors.Is(err, group.ErrTooManyGroups) {
		reason, label = "too many groups", "too_many_groups"
	}
	s.metrics.Rejected(label)
	sess.Start()
	sess.Close(websocket.StatusTryAgainLater, reason)
	go func() {
		defer s.handlers.Done()
		defer ticket.Release()
		drain(sess.Conn())
		sess.ReaderDone()
		sess.Wait()
		if s.log.Debug().Enabled() {
			sess.Log().Debug().Str("remote", sess.Remote).Str("close_reason", reason).Msg("refused after the upgrade")
		}
	}()
}

// subprotocols are the ones the proxy answers with, if a client offers them:
// browsers send a token as a second subprotocol beside this one (SPEC 9).
var subprotocols = []string{auth.Subprotocol}

// serve reads from sess until the connection ends, then waits for its writer
// and logs the end, and gives back its admission ticket. Shutdown waits for
// it (it was counted by track). A connection with a token ends when it
// expires (expires: zero for never).
func (s *Server) serve(sess *session.Session, g *group.Group, leave func(), ticket *limits.Ticket, expires time.Time) {
	defer s.handlers.Done()
	defer ticket.Release()
	var exp *expiry
	if !expires.IsZero() {
		exp = s.expireAt(sess, expires)
	}
	err := s.readLoop(sess, g, exp)
	exp.stop()
	s.classifyEnd(sess, err)
	leave() // after classifyEnd: presence's leave event carries the final close status
	if err == nil {
		// Closing: read on (forwarding nothing) until the client answers
		// the close frame, or the writer cuts the socket.
		drain(sess.Conn())
	}
	sess.ReaderDone()
	sess.Wait()
	s.logEnd(sess)
}

// drain reads and discards messages until the connection ends. It must
// start between messages: the library's Reader would take the middle of one
// for a frame header.
func drain(conn *websocket.Conn) {
	for {
		_, r, err := conn.Reader(context.Background())
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
}

// track counts a connection in unless the server is draining.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.handlers.Add(1)
	return true
}

// testHookNextMessage, set only by tests, runs before the reader waits for
// each message.
var testHookNextMessage func(*session.Session)

// readLoop reads and relays messages until the connection ends, the session
// is asked to close, or exp (if not nil) is due at a message boundary.
func (s *Server) readLoop(sess *session.Session, g *group.Group, exp *expiry) error {
	conn := sess.Conn()
	from := MemberSender(sess)
	src := &source{stop: sess.Closing(), truncated: sess.NetConn().ReadFailed}
	if s.opts.MessageIdleTimeout > 0 {
		src.watch = newStallWatch(sess, s.opts.MessageIdleTimeout, s.opts.BufferBytes)
		defer src.watch.close()
	}
	src.rate = s.newRateLimit(from)
	to := recipients{groups: []*group.Group{g}, busGroups: []string{g.Name}}
	for {
		if testHookNextMessage != nil {
			testHookNextMessage(sess)
		}
		typ, r, err := conn.Reader(context.Background())
		if err != nil {
			return err
		}
		// The message goes to the members connected as it starts.
		to.members = g.Members()
		select {
		case <-sess.Closing():
			// Replaced, kicked or evicted: forward nothing more. The
			// rest of this message is read and dropped, so that serve
			// can read on from a frame boundary.
			_, _ = io.Copy(io.Discard, r)
			return nil
		default:
		}
		sess.BeginMessage()
		if src.watch != nil {
			src.watch.start()
		}
		src.r, src.typ, src.read = r, typ, 0
		if src.rate != nil {
			err = src.rate.message()
		}
		if err == nil {
			_, err = s.relay(src, from, to)
		}
		if src.watch != nil {
			src.watch.stop()
		}
		sess.EndMessage()
		if errors.Is(err, errRateLimited) {
			sess.Close(websocket.StatusPolicyViolation, "rate limited")
			err = errAbandoned
		}
		if errors.Is(err, errAbandoned) {
			_, _ = io.Copy(io.Discard, r) // as above
			return nil
		}
		if err != nil {
			return err
		}
		if exp.boundary() {
			return nil
		}
	}
}

// classifyEnd records why the reader stopped as the session's close status.
// The first close request wins, so a close the proxy asked for earlier (kick,
// replace, eviction) is what the log and metrics show.
func (s *Server) classifyEnd(sess *session.Session, err error) {
	var ce websocket.CloseError
	switch {
	case err == nil, errors.Is(err, message.ErrStopped):
		sess.Close(websocket.StatusNormalClosure, "") // normally already closing
	case errors.Is(err, errTooBig):
		sess.Close(websocket.StatusMessageTooBig, "message too big")
	case errors.Is(err, errInvalidUTF8):
		sess.Close(websocket.StatusInvalidFramePayloadData, "invalid utf-8")
	case errors.Is(err, errStalled):
		sess.Close(websocket.StatusPolicyViolation, "message stalled")
	case errors.Is(err, hijack.ErrInvalidClose):
		// A close frame whose reason is not UTF-8 (RFC 6455 section 8.1):
		// hijack.Conn kept it from the library, which would have echoed it.
		sess.Close(websocket.StatusInvalidFramePayloadData, "invalid utf-8")
	case errors.As(err, &ce):
		sess.ClosedByPeer(ce.Code, ce.Reason)
	case errors.Is(err, errTruncated), sess.NetConn().ReadFailed():
		sess.ClosedByPeer(websocket.StatusAbnormalClosure, "connection dropped")
	default:
		// The library refused the client's frames (and has sent 1002 itself).
		sess.Log().Debug().Err(err).Msg("protocol error")
		sess.Close(websocket.StatusProtocolError, "protocol error")
	}
}

func (s *Server) logEnd(sess *session.Session) {
	code, reason, byPeer := sess.CloseStatus()
	st := sess.Stats()
	s.metrics.Disconnected(code, byPeer)
	closeSent := sess.NetConn().CloseSent()
	if !byPeer {
		s.metrics.CloseFrame(closeSent)
	}
	sess.Log().Info().
		Str("remote", sess.Remote).
		Float64("duration_s", time.Since(sess.Since).Seconds()).
		Int64("msgs_in", st.MessagesIn).Int64("bytes_in", st.BytesIn).
		Int64("msgs_out", st.MessagesOut).Int64("bytes_out", st.BytesOut).
		Int("close_code", int(code)).Str("close_reason", reason).Bool("closed_by_peer", byPeer).
		Bool("close_frame_sent", closeSent).
		Msg("connection closed")
}

// quietPeriod is how long every reader must have been between messages, with
// nothing queued anywhere, before a drain counts as done: messages clients
// sent just before the signal may still be in their sockets.
const quietPeriod = 100 * time.Millisecond

// Shutdown drains and closes every connection (SPEC section 5): new
// connections are refused with 503 from now on; members keep being served
// until nothing is queued and no message has been read for quietPeriod, or
// ctx ends; then every client is closed with 1001, in parallel. Shutdown
// returns when every connection's goroutines are done.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.draining.Store(true)
	s.mu.Unlock()

	// Done when, for a whole quietPeriod of the drain, nothing was queued,
	// every reader was between messages and none started or finished one. (A
	// reader that has not woken yet for bytes already in its socket looks
	// quiet for a moment: hence a whole period, watched from the start.)
	var seen map[*session.Session]uint64
	quietSince := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var busy bool
		if busy, seen = s.busy(seen); busy {
			quietSince = time.Now()
		} else if time.Since(quietSince) >= quietPeriod {
			break
		}
		select {
		case <-ctx.Done():
			s.log.Warn().Msg("shutdown timeout reached with messages still queued")
			goto closeAll
		case <-tick.C:
		}
	}
closeAll:
	s.closingAll.Store(true)
	sessions := append(s.registry.Sessions(), s.presence.Watchers()...)
	for _, sess := range sessions {
		sess.Close(websocket.StatusGoingAway, "going away")
	}
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
		s.presence.Close()
		return
	case <-time.After(s.opts.CloseGrace + time.Second):
	}
	// Whatever is still up is stuck in a write to a client that reads
	// nothing: cut it off.
	for _, sess := range append(append(sessions, s.registry.Sessions()...), s.presence.Watchers()...) {
		sess.NetConn().AbortWrites()
		_ = sess.NetConn().Close()
	}
	<-done
	s.presence.Close()
}

// busy reports whether any session has something queued, is reading a
// message, or started or finished one since the previous call (whose
// activity counts are prev; it returns the new ones).
func (s *Server) busy(prev map[*session.Session]uint64) (bool, map[*session.Session]uint64) {
	sessions := s.registry.Sessions()
	cur := make(map[*session.Session]uint64, len(sessions))
	busy := false
	for _, sess := range sessions {
		in, marks := sess.Activity()
		cur[sess] = marks
		if was, ok := prev[sess]; !ok || was != marks || in || !sess.Idle() {
			busy = true
		}
	}
	return busy, cur
}
