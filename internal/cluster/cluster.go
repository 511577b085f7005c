// Package cluster shares groups between proxies through NATS (SPEC section
// 12): members on different nodes talk as members of one node do, and a
// node that cannot prove its members got every message closes them with 4004
// rather than lose anything silently.
//
// Data goes over core NATS, one subject per group, in chunks no larger than
// the server's max_payload; every chunk carries its origin node's epoch and a
// sequence number per (origin, group), so a receiving node sees any gap. Each
// node reads every group subject through one subscription and hands each
// (origin, group)'s chunks, in order, to a worker that relays them to the
// group's members here through forward.Server.DeliverRemote, exactly as a
// local sender's message: large ones streamed through a bounded ring. To the
// origin, every other node with members in the group is one more receiver
// whose queue is a credit window (--bus-window-bytes): under backpressure a
// sender waits for it, a node that grants nothing for --write-timeout is cut
// (its members of the group get 1008), and under disconnect a node that
// falls a window behind closes its own members of the group (1008).
//
// JetStream carries no message data: one KV bucket holds the member
// registry, whose revisions decide duplicate ids across nodes (4001 for the
// older claim) and give the admin API its cluster-wide view. Heartbeats on
// one subject tell nodes of each other; a node silent for
// --cluster-peer-timeout is lost, and its peers close the members of groups
// it shared (4004).
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// Config is a node's cluster settings.
type Config struct {
	URL         string        // NATS server(s), comma-separated
	Name        string        // the cluster: prefix of every subject and bucket
	Node        string        // this node's name, for people
	Heartbeat   time.Duration // how often a node tells the others it is alive
	PeerTimeout time.Duration // a node silent this long is lost
	ChunkBytes  int           // largest payload per bus message (capped by max_payload)
	WindowBytes int           // bytes in flight per (origin, node, group)

	// From the forwarding settings.
	Policy       forward.Policy
	WriteTimeout time.Duration // a node that grants no room this long is cut

	// PendingMessages, if not 0, is the data subscription's pending limit
	// in messages (tests force NATS slow consumers with a small one).
	PendingMessages int

	// Idle, if not 0, is how long a group's bus state (its sequence
	// numbers, on the sending and the receiving side) outlives its last
	// chunk; 0: the larger of 1 minute, twice PeerTimeout and twice
	// WriteTimeout.
	Idle time.Duration
}

func (c *Config) idle() time.Duration {
	if c.Idle > 0 {
		return c.Idle
	}
	return max(time.Minute, 2*c.PeerTimeout, 2*c.WriteTimeout)
}

// Defaults for the flags.
const (
	DefaultName        = "wsproxy"
	DefaultHeartbeat   = time.Second
	DefaultPeerTimeout = 6 * time.Second
	DefaultChunkBytes  = 128 << 10
	DefaultWindowBytes = 1 << 20

	// minPayload is the smallest NATS max_payload a node works with.
	minPayload = 4 << 10
	// maxHeaderBytes is the most a chunk's header and ids take.
	maxHeaderBytes = headerLen + 2*255
)

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Check reports what is wrong with c, in terms of its flags.
func (c *Config) Check() error {
	switch {
	case !validName.MatchString(c.Name):
		return fmt.Errorf("--cluster-name %q: want 1-64 of A-Z a-z 0-9 _ -", c.Name)
	case c.Node == "":
		return errors.New("--node-name must not be empty")
	case c.Heartbeat <= 0:
		return errors.New("--cluster-heartbeat must be positive")
	case c.PeerTimeout < 2*c.Heartbeat:
		return errors.New("--cluster-peer-timeout must be at least twice --cluster-heartbeat")
	case c.ChunkBytes < 1<<10:
		return errors.New("--bus-chunk-bytes must be at least 1KiB")
	case c.WindowBytes < 2*c.ChunkBytes:
		return errors.New("--bus-window-bytes must be at least twice --bus-chunk-bytes")
	}
	return nil
}

// Node is this process's membership in a cluster. It implements
// forward.Bus.
type Node struct {
	// Static after New.
	cfg     Config
	log     zerolog.Logger
	local   *forward.Server
	met     *busMetrics
	prefix  string // "<cluster>."
	dataSub string // "<cluster>.g."

	// Set by Start, then static (nats.go reconnects by itself).
	nc      *nats.Conn
	js      jetstream.JetStream
	members jetstream.KeyValue
	chunk   int // payload bytes per chunk

	epoch atomic.Uint64 // changes only when the node is fenced

	admin atomic.Pointer[nats.Conn] // set by startAdmin (admin.go): nil until then

	// Readiness.
	connected  atomic.Bool
	synced     atomic.Bool  // the registry watch has delivered every key
	heartbeat  atomic.Bool  // the first heartbeat is out
	lostSince  atomic.Int64 // when the bus was lost (0: not lost, or handled)
	downSince  atomic.Int64 // when the bus was lost (0: connected)
	alive      atomic.Int64 // when a round trip to NATS last succeeded
	resyncing  sync.Mutex   // one resync at a time
	closed     chan struct{}
	closedOnce sync.Once
	wg         sync.WaitGroup // every goroutine the node starts

	mu        sync.Mutex
	peers     map[uint64]*peer                // live nodes by epoch
	dead      map[uint64]time.Time            // epochs declared lost, ignored from then on
	index     map[string]*gindex              // the registry: every member of the cluster, by group
	recent    map[uint64]map[string]time.Time // groups other nodes' members left lately, by node
	claims    map[string]*claim               // this node's members, by registry key
	out       map[string]*outGroup            // groups this node sends to, by name
	in        map[inKey]*inGroup              // (origin, group) states
	nodeSub   *nats.Subscription
	watcher   jetstream.KeyWatcher
	stopWatch context.CancelFunc
	order     jetstream.KeyValue   // stream order leases (order.go)
	leases    map[placedKey]*lease // held, by stream
	data      *nats.Subscription   // static after Start

	// Batches waiting for the flusher (out.go).
	flushMu   sync.Mutex
	dirty     []*outGroup // groups with a batch (a group may appear twice)
	spare     []*outGroup
	flushWake chan struct{} // cap 1
	batched   atomic.Int64  // bytes in every group's batch

	offFloor int64 // past the offsets of every outGroup forgotten (guarded by mu)
}

// New returns a node for local; Start connects it.
func New(cfg Config, local *forward.Server, log zerolog.Logger, m *metrics.Metrics) (*Node, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		log:     log.With().Str("node", cfg.Node).Logger(),
		local:   local,
		prefix:  cfg.Name + ".",
		dataSub: cfg.Name + ".g.",
		closed:  make(chan struct{}),
		peers:   map[uint64]*peer{},
		dead:    map[uint64]time.Time{},
		index:   map[string]*gindex{},
		recent:  map[uint64]map[string]time.Time{},
		claims:  map[string]*claim{},
		out:     map[string]*outGroup{},
		in:      map[inKey]*inGroup{},
		leases:  map[placedKey]*lease{},

		flushWake: make(chan struct{}, 1),
	}
	n.epoch.Store(newEpoch())
	n.met = newBusMetrics(m, n)
	return n, nil
}

func newEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

func epochHex(e uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e)
	return hex.EncodeToString(b[:])
}

// Start connects to NATS, binds the registry and starts the heartbeats. It
// fails if NATS cannot be reached at all; once connected, losses of the bus
// are handled (the node is not ready meanwhile) and never end the process.
func (n *Node) Start(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("wsproxy " + n.cfg.Node),
		nats.NoEcho(),
		nats.ReconnectBufSize(-1), // a publish while cut off fails: never replayed late
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// nats.go's own pings notice a dead link within about the peer
		// timeout; the probe (peers.go) notices sooner.
		nats.PingInterval(n.cfg.PeerTimeout / 3),
		nats.MaxPingsOutstanding(3),
		nats.Timeout(2 * time.Second),
		// A write to a link that went dead fails (and the connection is
		// dropped) well within the peer timeout.
		nats.FlusherTimeout(n.cfg.PeerTimeout / 2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { n.busLost(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { n.busBack() }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) { n.asyncError(sub, err) }),
	}
	nc, err := nats.Connect(n.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("cluster: connect to %s: %w", n.cfg.URL, err)
	}
	n.nc = nc
	mp := int(nc.MaxPayload())
	if mp < minPayload {
		nc.Close()
		return fmt.Errorf("cluster: NATS max_payload %d is under %d bytes", mp, minPayload)
	}
	n.chunk = min(n.cfg.ChunkBytes, mp-maxHeaderBytes-512)
	if n.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	n.connected.Store(true)
	// One subscription for every group: interest in a group never has to
	// be set up before a member joins (no window in which a new member
	// could miss a message nobody knows it missed), and one goroutine
	// dispatches every chunk without ever blocking.
	data, err := nc.Subscribe(n.dataSub+">", n.onData)
	if err != nil {
		nc.Close()
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if n.cfg.PendingMessages > 0 {
		_ = data.SetPendingLimits(n.cfg.PendingMessages, -1)
	}
	n.data = data
	if _, err := nc.Subscribe(n.prefix+"hb", n.onHeartbeat); err != nil {
		nc.Close()
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	if err := n.subscribeNode(); err != nil {
		nc.Close()
		return err
	}
	if err := n.bindOrder(ctx); err != nil {
		nc.Close()
		return err
	}
	if err := n.bindRegistry(ctx); err != nil {
		nc.Close()
		return err
	}
	if err := n.startAdmin(); err != nil {
		nc.Close()
		return err
	}
	n.alive.Store(time.Now().UnixNano())
	n.wg.Add(3)
	go n.heartbeats()
	go n.probe()
	go n.flusher()
	n.log.Info().Str("epoch", epochHex(n.epoch.Load())).Str("nats", nc.ConnectedUrlRedacted()).
		Int("chunk_bytes", n.chunk).Msg("cluster: joined")
	return nil
}

// subscribeNode subscribes to this epoch's own subject.
func (n *Node) subscribeNode() error {
	sub, err := n.nc.Subscribe(n.nodeSubject(n.epoch.Load()), n.onNode)
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.mu.Lock()
	old := n.nodeSub
	n.nodeSub = sub
	n.mu.Unlock()
	if old != nil {
		_ = old.Unsubscribe()
	}
	return nil
}

func (n *Node) nodeSubject(epoch uint64) string { return n.prefix + "n." + epochHex(epoch) }

// Ready reports why new members cannot join now (nil: they can).
func (n *Node) Ready() error {
	switch {
	case !n.connected.Load():
		return errors.New("NATS is not reachable")
	case !n.synced.Load():
		return errors.New("registry not synced")
	case !n.heartbeat.Load():
		return errors.New("no heartbeat sent yet")
	}
	return nil
}

// Close leaves the cluster gracefully: call it after the local server has
// closed every member (the drain). It tells the others the last sequence
// number it sent to every group, so that they can tell a clean end from a
// loss, then closes the connection.
func (n *Node) Close() {
	n.closedOnce.Do(func() { close(n.closed) })
	if n.nc == nil {
		return
	}
	n.flushAll()
	n.sendBye()
	_ = n.nc.FlushTimeout(2 * time.Second)
	n.stopWatcher()
	n.nc.Close()
	// Whatever is still being relayed from other nodes is abandoned.
	n.mu.Lock()
	ins := n.takeInLocked(func(inKey) bool { return true })
	n.mu.Unlock()
	for _, ig := range ins {
		ig.reset()
	}
	n.wg.Wait()
}

// closeGroupLocal closes this node's members of group that connected before
// cutoff (all if it is zero) with code and reason, counting the loss by
// reason.
func (n *Node) closeGroupLocal(group string, cutoff time.Time, code websocket.StatusCode, reason, why string) {
	if !n.local.HasGroup(group) {
		return
	}
	n.met.loss(why)
	n.log.Warn().Str("group", group).Int("code", int(code)).Str("cause", why).Msg("cluster: closing the group's members here")
	n.local.CloseGroup(group, cutoff, code, reason)
}

// Close codes the cluster sends.
const (
	statusMissed   websocket.StatusCode = 4004
	reasonMissed                        = "missed messages"
	statusReplaced websocket.StatusCode = 4001
)
