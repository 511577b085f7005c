package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsproxy/wsproxy/internal/forward"
)

// The member registry: one JetStream KV key per member of the cluster,
// m.<group>.<id> (both base64url) -> regValue. A join is a Put; the
// revision it returns orders it against every other claim of the same key,
// whatever the nodes' clocks say: a node whose member holds a key at a
// revision below one another node wrote closes it with 4001. A leave is a
// delete conditional on the member's own revision, so it never removes a
// newer claim. Every node watches the whole bucket and keeps it as an index
// (who is in which group, on which node), for the credit windows and the
// admin API.

type regValue struct {
	Epoch uint64 `json:"e"`
	Node  string `json:"n"`
	Since int64  `json:"s"` // Unix milliseconds
}

// gindex is one group in the index.
type gindex struct {
	members map[string]ientry // by id
	epochs  map[uint64]int    // members per node
}

type ientry struct {
	regValue
	rev uint64
}

// claim is one of this node's members in the registry.
type claim struct {
	key   string
	group string
	rev   uint64
	c     *forward.Claim
}

// MemberInfo is a member of the cluster as the registry has it.
type MemberInfo struct {
	ID    string
	Node  string
	Since time.Time
	Local bool // on this node
}

func memberKey(group, id string) string { return "m." + encodeName(group) + "." + encodeName(id) }

func parseKey(key string) (group, id string, ok bool) {
	rest, found := strings.CutPrefix(key, "m.")
	if !found {
		return "", "", false
	}
	g64, id64, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	group, ok1 := decodeName(g64)
	id, ok2 := decodeName(id64)
	return group, id, ok1 && ok2
}

// bindRegistry creates (or finds) the bucket and starts the watch. The node
// is not ready until the watch has delivered every key.
func (n *Node) bindRegistry(ctx context.Context) error {
	kv, err := n.bucket(ctx, jetstream.KeyValueConfig{
		Bucket:      n.cfg.Name + "_members",
		Description: "wsproxy members: m.<group>.<id> -> the node holding it",
		Storage:     jetstream.MemoryStorage,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("cluster: registry bucket: %w", err)
	}
	n.mu.Lock()
	n.members = kv
	n.mu.Unlock()
	return n.watch()
}

// watch (re)starts the registry watch and rebuilds the index from it.
func (n *Node) watch() error {
	n.synced.Store(false)
	n.stopWatcher()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := n.kv().WatchAll(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: registry watch: %w", err)
	}
	n.mu.Lock()
	n.watcher, n.stopWatch = w, cancel
	n.index = map[string]*gindex{}
	n.mu.Unlock()
	n.wg.Add(1)
	go n.readWatch(w)
	// Wait for the initial values.
	deadline := time.After(10 * time.Second)
	for !n.synced.Load() {
		select {
		case <-deadline:
			return errors.New("cluster: registry watch: initial values did not arrive in 10s")
		case <-n.closed:
			return errors.New("cluster: closed")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// stopWatcher stops the registry watch, if one runs.
func (n *Node) stopWatcher() {
	n.mu.Lock()
	w, cancel := n.watcher, n.stopWatch
	n.watcher, n.stopWatch = nil, nil
	n.mu.Unlock()
	if w != nil {
		_ = w.Stop()
		cancel()
	}
}

func (n *Node) readWatch(w jetstream.KeyWatcher) {
	defer n.wg.Done()
	for e := range w.Updates() {
		if e == nil {
			n.synced.Store(true)
			continue
		}
		n.applyEntry(e)
	}
}

// applyEntry brings one registry change into the index and acts on it for
// this node's members: replaced elsewhere (4001) or removed by others while
// alive (4004).
func (n *Node) applyEntry(e jetstream.KeyValueEntry) {
	group, id, ok := parseKey(e.Key())
	if !ok {
		return
	}
	me := n.epoch.Load()
	var closeWith *forward.Claim
	var code = statusReplaced
	reason := "replaced"
	n.mu.Lock()
	gi := n.index[group]
	if old, ok := gi.get(id); ok && old.rev > e.Revision() {
		n.mu.Unlock()
		return // stale
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		var v regValue
		if json.Unmarshal(e.Value(), &v) != nil {
			n.mu.Unlock()
			return
		}
		if gi == nil {
			gi = &gindex{members: map[string]ientry{}, epochs: map[uint64]int{}}
			n.index[group] = gi
		}
		if old, ok := gi.members[id]; ok {
			gi.drop(old.Epoch)
		}
		gi.members[id] = ientry{v, e.Revision()}
		gi.epochs[v.Epoch]++
		n.notePeerLocked(v.Epoch, v.Node)
		if c := n.claims[e.Key()]; c != nil && v.Epoch != me && c.rev < e.Revision() {
			delete(n.claims, e.Key())
			closeWith = c.c
		}
	default: // deleted or purged
		if old, ok := gi.get(id); ok && e.Operation() == jetstream.KeyValuePurge && n.peers[old.Epoch] != nil {
			// Another node declared old's node lost and purged its
			// entries: this node follows the verdict now rather than at
			// its own timeout, which could come after a member joined
			// here on seeing the purge (and close it for nothing).
			n.mu.Unlock()
			n.peerLost(old.Epoch, "registry")
			n.mu.Lock()
			gi = n.index[group]
		}
		if gi != nil {
			if old, ok := gi.members[id]; ok {
				delete(gi.members, id)
				gi.drop(old.Epoch)
				n.leftLocked(old.Epoch, group)
				if len(gi.members) == 0 {
					delete(n.index, group)
				}
			}
		}
		if c := n.claims[e.Key()]; c != nil && c.rev < e.Revision() {
			// Someone else removed a live member's entry: the others
			// declared this node lost. Its messages may have been missed.
			delete(n.claims, e.Key())
			closeWith, code, reason = c.c, statusMissed, reasonMissed
			n.met.loss("purged")
			n.log.Warn().Str("group", group).Str("id", id).Uint64("claimed", c.rev).Uint64("removed", e.Revision()).
				Int("code", int(code)).Str("cause", "purged").Msg("cluster: a member here was removed from the registry by another node")
		}
	}
	n.mu.Unlock()
	n.presenceEntry(group, id, e) // admin.go
	if closeWith != nil {
		closeWith.Close(code, reason)
	}
}

func (gi *gindex) get(id string) (ientry, bool) {
	if gi == nil {
		return ientry{}, false
	}
	e, ok := gi.members[id]
	return e, ok
}

func (gi *gindex) drop(epoch uint64) {
	if gi.epochs[epoch]--; gi.epochs[epoch] <= 0 {
		delete(gi.epochs, epoch)
	}
}

// Claim registers (group, id) for a member joining here (forward.Bus).
func (n *Node) Claim(group, id string, c *forward.Claim) (func(), error) {
	key := memberKey(group, id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	rev, err := n.kv().Put(ctx, key, n.claimValue())
	n.met.registryOp("put", err, time.Since(start))
	if err != nil {
		return nil, errors.New("member registry unavailable")
	}
	cl := &claim{key: key, group: group, rev: rev, c: c}
	n.mu.Lock()
	n.claims[key] = cl // a local predecessor's claim is superseded
	// A claim from another node may already have overtaken this one.
	if e, ok := n.index[group].get(id); ok && e.rev > rev && e.Epoch != n.epoch.Load() {
		delete(n.claims, key)
		c.Close(statusReplaced, "replaced")
	}
	n.mu.Unlock()
	return func() { n.release(cl) }, nil
}

// release gives a member's claim back: its entry is deleted unless a newer
// claim holds the key.
func (n *Node) release(cl *claim) {
	n.mu.Lock()
	if n.claims[cl.key] == cl {
		delete(n.claims, cl.key)
	}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := n.kv().Delete(ctx, cl.key, jetstream.LastRevision(cl.rev))
	n.met.registryOp("delete", err, time.Since(start))
}

// purge removes registry entries that outlived their members
// (conditionally: a newer claim of the same key stays). Every survivor
// tries; all but one fail, harmlessly. The operation tells the others why:
// a delete is a member's leave (after its node said goodbye, or left over
// from a reconnect), a purge is the verdict that its node was lost, which
// every node then shares at once (see applyEntry).
func (n *Node) purge(keys map[string]uint64, op jetstream.KeyValueOp) {
	if len(keys) == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for k, rev := range keys {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var err error
			if op == jetstream.KeyValuePurge {
				err = n.kv().Purge(ctx, k, jetstream.LastRevision(rev))
			} else {
				err = n.kv().Delete(ctx, k, jetstream.LastRevision(rev))
			}
			cancel()
			n.met.registryOp("purge", err, 0)
		}
	}()
}

// leftLocked remembers that a member of node e left group: if e is lost
// soon after, the group is one it shared (its entries may have been purged
// by another survivor before this node noticed the loss itself).
func (n *Node) leftLocked(e uint64, group string) {
	if e == n.epoch.Load() {
		return
	}
	m := n.recent[e]
	if m == nil {
		m = map[string]time.Time{}
		n.recent[e] = m
	}
	m[group] = time.Now()
}

// pruneRecentLocked forgets departures older than twice the peer timeout.
func (n *Node) pruneRecentLocked(now time.Time) {
	for e, m := range n.recent {
		for g, at := range m {
			if now.Sub(at) > 2*n.cfg.PeerTimeout {
				delete(m, g)
			}
		}
		if len(m) == 0 {
			delete(n.recent, e)
		}
	}
}

// forgetEpochLocked removes a node's members from the index and returns the
// groups they were in, or left lately, and their keys, for purging.
func (n *Node) forgetEpochLocked(e uint64) (map[string]struct{}, map[string]uint64) {
	groups := map[string]struct{}{}
	keys := map[string]uint64{}
	for g := range n.recent[e] {
		groups[g] = struct{}{}
	}
	delete(n.recent, e)
	for g, gi := range n.index {
		if gi.epochs[e] == 0 {
			continue
		}
		groups[g] = struct{}{}
		for id, m := range gi.members {
			if m.Epoch == e {
				keys[memberKey(g, id)] = m.rev
				delete(gi.members, id)
			}
		}
		delete(gi.epochs, e)
		if len(gi.members) == 0 {
			delete(n.index, g)
		}
	}
	return groups, keys
}

// remoteNodes is the epochs other than this node's with members in group.
func (n *Node) remoteNodesLocked(group string) map[uint64]int {
	gi := n.index[group]
	if gi == nil {
		return nil
	}
	return gi.epochs
}

// spans reports whether another node has members in group.
func (n *Node) spansLocked(group string) bool {
	me := n.epoch.Load()
	for e := range n.remoteNodesLocked(group) {
		if e != me {
			return true
		}
	}
	return false
}

// Members lists group's members across the cluster, as the registry has
// them (sorted by the caller).
func (n *Node) Members(group string) []MemberInfo {
	me := n.epoch.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	gi := n.index[group]
	if gi == nil {
		return nil
	}
	out := make([]MemberInfo, 0, len(gi.members))
	for id, e := range gi.members {
		out = append(out, MemberInfo{ID: id, Node: e.Node, Since: time.UnixMilli(e.Since), Local: e.Epoch == me})
	}
	return out
}

// GroupCounts is the number of members of every group of the cluster.
func (n *Node) GroupCounts() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.index))
	for g, gi := range n.index {
		out[g] = len(gi.members)
	}
	return out
}

// NodeOf is the node holding member id of group, per the registry.
func (n *Node) NodeOf(group, id string) (node string, epoch uint64, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.index[group].get(id)
	return e.Node, e.Epoch, ok
}

var errKeyExists = jetstream.ErrKeyExists

func idOf(key string) string {
	_, id, _ := parseKey(key)
	return id
}

func (n *Node) claimValue() []byte {
	v, _ := json.Marshal(regValue{Epoch: n.epoch.Load(), Node: n.cfg.Node, Since: time.Now().UnixMilli()})
	return v
}

// bucket creates (or updates) a KV bucket with as many replicas as NATS
// can keep: three when the server is part of a cluster (the bucket then
// survives the loss of any one server), one if the cluster cannot place
// three or NATS is a single server. Two would survive neither server's
// loss. Never fewer than the bucket has: another node may have found
// room for more.
func (n *Node) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = 1
	if n.nc.ConnectedClusterName() != "" {
		cfg.Replicas = 3
	}
	if s, err := n.js.Stream(ctx, "KV_"+cfg.Bucket); err == nil {
		cfg.Replicas = max(cfg.Replicas, s.CachedInfo().Config.Replicas)
	}
	kv, err := n.js.CreateOrUpdateKeyValue(ctx, cfg)
	var apiErr *jetstream.APIError
	if err != nil && cfg.Replicas > 1 && errors.As(err, &apiErr) && apiErr.ErrorCode == jsNoSuitablePeers {
		n.log.Warn().Str("bucket", cfg.Bucket).Msg("cluster: NATS cannot place three replicas; keeping one")
		cfg.Replicas = 1
		kv, err = n.js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// jsNoSuitablePeers is JetStream's error code for a placement it cannot
// make (fewer servers than replicas).
const jsNoSuitablePeers = 10005

// kv is the registry bucket (rebound after NATS restarts).
func (n *Node) kv() jetstream.KeyValue {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.members
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
