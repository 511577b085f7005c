package cluster

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// peer is another live node.
type peer struct {
	name string
	last time.Time // when its last heartbeat arrived
}

// beat is a heartbeat: a node is alive; or, with Bye, it has left, having
// sent Finals[g64] chunks to each group.
type beat struct {
	Epoch  uint64            `json:"e"`
	Node   string            `json:"n"`
	Bye    bool              `json:"bye,omitempty"`
	Finals map[string]uint64 `json:"finals,omitempty"`
}

// heartbeats runs until the node closes: it sends a heartbeat every
// --cluster-heartbeat and declares lost the peers silent for
// --cluster-peer-timeout, and this node's own members lost when the bus has
// been gone that long.
func (n *Node) heartbeats() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	last := time.Now()
	for {
		n.sendBeat()
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		// A tick long overdue means this process was frozen (paused,
		// starved): the silence was ours, not the peers'. Frozen for
		// about the peer timeout, the others may have declared this node
		// lost and closed their members of its groups: it starts over.
		gap := time.Since(last)
		last = time.Now()
		if gap > n.cfg.PeerTimeout/2 {
			n.forgivePeers()
		}
		if gap >= n.cfg.PeerTimeout-n.cfg.Heartbeat {
			n.log.Warn().Stringer("frozen", gap).Msg("cluster: this node was frozen for about the peer timeout")
			n.fenced()
			continue
		}
		n.checkPeers()
		n.checkBusLost()
		now := time.Now()
		n.forgetIdleOut(now)
		n.forgetIdleIn(now)
	}
}

// probe checks this node's own link to NATS with a round trip every
// heartbeat. A link that does not answer within half the peer timeout is
// dropped (nats.go reconnects), so that a node cut off notices it before its
// peers' silence could be blamed on them.
func (n *Node) probe() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		if !n.nc.IsConnected() {
			continue
		}
		// alive is when the round trip started: what was published
		// before then is in NATS.
		start := time.Now()
		err := n.nc.FlushTimeout(n.cfg.PeerTimeout / 2)
		if err == nil {
			n.alive.Store(start.UnixNano())
			continue
		}
		// A round trip can wait behind a window of data on a busy
		// machine: only a link silent for the whole peer timeout is
		// dropped.
		if n.nc.IsConnected() && time.Since(time.Unix(0, n.alive.Load())) >= n.cfg.PeerTimeout {
			n.log.Warn().Err(err).Msg("cluster: NATS does not answer; reconnecting")
			_ = n.nc.ForceReconnect()
		}
	}
}

// forgivePeers treats every known peer as just heard from.
func (n *Node) forgivePeers() {
	now := time.Now()
	n.mu.Lock()
	for _, p := range n.peers {
		p.last = now
	}
	n.mu.Unlock()
}

func (n *Node) sendBeat() {
	if !n.connected.Load() {
		return
	}
	if testNoHeartbeat != nil && testNoHeartbeat(n) {
		n.heartbeat.Store(true)
		return
	}
	b, _ := json.Marshal(beat{Epoch: n.epoch.Load(), Node: n.cfg.Node})
	if err := n.nc.Publish(n.prefix+"hb", b); err == nil {
		n.heartbeat.Store(true)
	}
}

// sendBye tells the others this node is leaving, with the last sequence
// number it sent to each group.
func (n *Node) sendBye() {
	n.mu.Lock()
	finals := make(map[string]uint64, len(n.out))
	for _, og := range n.out {
		if s := og.sent(); s > 0 {
			finals[og.g64] = s
		}
	}
	n.mu.Unlock()
	b, _ := json.Marshal(beat{Epoch: n.epoch.Load(), Node: n.cfg.Node, Bye: true, Finals: finals})
	_ = n.nc.Publish(n.prefix+"hb", b)
}

func (n *Node) onHeartbeat(msg *natsMsg) {
	var hb beat
	if json.Unmarshal(msg.Data, &hb) != nil || hb.Epoch == 0 || hb.Epoch == n.epoch.Load() {
		return
	}
	now := time.Now()
	n.mu.Lock()
	if _, dead := n.dead[hb.Epoch]; dead {
		n.mu.Unlock()
		if !hb.Bye {
			// It was declared lost (frozen, or cut off) and is back: it
			// must start over as a new node, its members closed.
			_ = n.nc.Publish(n.nodeSubject(hb.Epoch), []byte{nodeFenced})
		}
		return
	}
	if hb.Bye {
		delete(n.peers, hb.Epoch)
		n.mu.Unlock()
		n.log.Info().Str("peer", hb.Node).Msg("cluster: peer left")
		n.wg.Add(1)
		go n.peerLeft(hb)
		return
	}
	p := n.peers[hb.Epoch]
	if p == nil || p.name == "" {
		if p == nil {
			p = &peer{}
			n.peers[hb.Epoch] = p
		}
		p.name = hb.Node
		n.log.Info().Str("peer", hb.Node).Str("epoch", epochHex(hb.Epoch)).Msg("cluster: peer joined")
	}
	p.last = now
	n.mu.Unlock()
}

// notePeerLocked starts watching node e if it is not known yet: a node
// seen first through its members or its messages (before its first
// heartbeat) is declared lost like any other if no heartbeat follows.
func (n *Node) notePeerLocked(e uint64, name string) {
	if e == n.epoch.Load() || n.peers[e] != nil {
		return
	}
	if _, dead := n.dead[e]; dead {
		return
	}
	n.peers[e] = &peer{name: name, last: time.Now()}
}

// checkPeers declares lost every peer silent for the peer timeout (unless
// this node is the one cut off: then nobody's heartbeats arrive).
func (n *Node) checkPeers() {
	now := time.Now()
	// Only a node that knows its own link works may blame its peers: its
	// last round trip to NATS is recent (within the peer timeout: on a
	// busy machine one can take a while).
	if !n.connected.Load() || now.Sub(time.Unix(0, n.alive.Load())) > n.cfg.PeerTimeout {
		return
	}
	var lost []uint64
	n.mu.Lock()
	for e, p := range n.peers {
		if now.Sub(p.last) > n.cfg.PeerTimeout {
			lost = append(lost, e)
		}
	}
	for e, at := range n.dead {
		if now.Sub(at) > 10*time.Minute {
			delete(n.dead, e)
		}
	}
	n.pruneRecentLocked(now)
	n.mu.Unlock()
	for _, e := range lost {
		n.peerLost(e, "silent")
	}
}

// peerLost ends everything from a node that went silent: its members may
// have sent messages this node never got, so this node's members of every
// group it shared are closed with 4004 (those part-way through one of its
// messages may see 4002 first); its registry entries are purged.
//
// A member that connects here after the verdict is not closed: from then on
// the lost node's members are not members anywhere (this node ignores its
// messages, and its entries are gone from the registry), so nothing of
// theirs is owed to it. how says who decided: "silent" (this node's own
// timeout) or "registry" (another node's verdict, seen as its purge).
func (n *Node) peerLost(e uint64, how string) {
	n.mu.Lock()
	if _, dead := n.dead[e]; dead {
		n.mu.Unlock()
		return // decided already
	}
	p := n.peers[e]
	delete(n.peers, e)
	verdict := time.Now()
	n.dead[e] = verdict
	groups, keys := n.forgetEpochLocked(e)
	ins := n.takeInLocked(func(k inKey) bool { return k.epoch == e })
	n.mu.Unlock()
	name := "?"
	if p != nil {
		name = p.name
	}
	n.log.Warn().Str("peer", name).Str("epoch", epochHex(e)).Str("by", how).Int("groups", len(groups)).Msg("cluster: peer lost")
	for _, ig := range ins {
		ig.reset()
		groups[ig.group] = struct{}{}
	}
	for g := range groups {
		n.closeGroupLocal(g, verdict, statusMissed, reasonMissed, "peer_lost")
	}
	n.purge(keys, jetstream.KeyValuePurge)
}

// peerLeft checks a peer's goodbye: once this node has had time to dispatch
// what it sent before it, every group whose last chunk from it did not
// arrive is a loss (4004); the others end cleanly.
func (n *Node) peerLeft(hb beat) {
	defer n.wg.Done()
	select {
	case <-n.closed:
		return
	case <-time.After(n.cfg.PeerTimeout):
	}
	n.mu.Lock()
	verdict := time.Now()
	n.dead[hb.Epoch] = verdict
	groups, keys := n.forgetEpochLocked(hb.Epoch)
	ins := n.takeInLocked(func(k inKey) bool { return k.epoch == hb.Epoch })
	n.mu.Unlock()
	_ = groups // its members left before it did: nothing was in flight
	for _, ig := range ins {
		got := ig.received()
		ig.reset()
		if got < hb.Finals[ig.g64] {
			n.closeGroupLocal(ig.group, verdict, statusMissed, reasonMissed, "peer_lost")
		}
	}
	n.purge(keys, jetstream.KeyValueDelete)
}

// fenced: the others declared this node lost while it was frozen or cut
// off, and ignore its epoch. It closes every member (they may have missed
// messages) and starts over under a new epoch.
func (n *Node) fenced() {
	old := n.epoch.Load()
	n.mu.Lock()
	ins := n.takeInLocked(func(inKey) bool { return true })
	n.out = map[string]*outGroup{}
	n.mu.Unlock()
	for _, ig := range ins {
		ig.reset()
	}
	n.met.loss("fenced")
	n.log.Warn().Str("epoch", epochHex(old)).Msg("cluster: declared lost by the others; closing every member and starting over")
	n.local.CloseAll(statusMissed, reasonMissed)
	n.epoch.Store(newEpoch())
	if err := n.subscribeNode(); err != nil {
		n.log.Error().Err(err).Msg("cluster: resubscribe after fencing")
	}
}
