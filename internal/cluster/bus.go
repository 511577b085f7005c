package cluster

import (
	"errors"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What happens to the connection to NATS, and what the node does about it.

// onNode handles what other nodes send to this one: credits, cuts, and
// the news that it was declared lost.
func (n *Node) onNode(msg *nats.Msg) {
	kind, e, off, g64, err := parseNodeMsg(msg.Data)
	if err != nil {
		return
	}
	switch kind {
	case nodeCredit:
		n.onCredit(e, off, g64)
	case nodeCut:
		// This node fell behind origin e in a group for too long.
		n.mu.Lock()
		ig := n.in[inKey{e, g64}]
		n.mu.Unlock()
		name, ok := decodeName(g64)
		if ig != nil {
			ig.reset()
		}
		if ok {
			n.closeGroupLocal(name, time.Time{}, 1008, "slow consumer", "cut")
		}
	case nodePlaced:
		n.onPlaced(e, uint64(off), g64)
	case nodeFenced:
		n.fenced()
	}
}

// sendCredit reports to origin e how far this node consumed its messages to
// group g64.
func (n *Node) sendCredit(e uint64, consumed int64, g64 string) {
	_ = n.nc.Publish(n.nodeSubject(e), appendCredit(nil, n.epoch.Load(), consumed, g64))
}

// busLost: the connection to NATS dropped. New members are refused (not
// ready); members of groups shared with other nodes may miss messages from
// now on, so they are closed (4004) at once; those of groups only here go on
// (nothing can reach them from elsewhere), until the peer timeout: by then
// the others have declared this node lost.
func (n *Node) busLost(err error) {
	if !n.connected.CompareAndSwap(true, false) {
		return
	}
	n.lostSince.Store(time.Now().UnixNano())
	n.downSince.Store(time.Now().UnixNano())
	n.met.up.Set(0)
	select {
	case <-n.closed:
		return // leaving: nothing is lost
	default:
	}
	n.log.Warn().Err(err).Msg("cluster: NATS connection lost")
	n.met.loss("bus_lost")
	n.closeSpanning("bus_lost")
}

// closeSpanning closes this node's members of every group another node has
// members in or has sent to, and resets what was received.
func (n *Node) closeSpanning(why string) {
	n.mu.Lock()
	groups := map[string]struct{}{}
	for g := range n.index {
		if n.spansLocked(g) {
			groups[g] = struct{}{}
		}
	}
	ins := n.takeInLocked(func(inKey) bool { return true })
	n.mu.Unlock()
	for _, ig := range ins {
		ig.reset()
		groups[ig.group] = struct{}{}
	}
	for g := range groups {
		n.closeGroupLocal(g, time.Time{}, statusMissed, reasonMissed, why)
	}
}

// checkBusLost closes every member once the bus has been gone for the peer
// timeout: the others have declared this node lost and purged its members.
func (n *Node) checkBusLost() {
	if n.connected.Load() {
		return
	}
	since := n.lostSince.Load()
	if since == 0 || time.Since(time.Unix(0, since)) < n.cfg.PeerTimeout {
		return
	}
	if n.lostSince.CompareAndSwap(since, 0) {
		n.log.Warn().Msg("cluster: NATS gone for --cluster-peer-timeout: closing every member")
		n.local.CloseAll(statusMissed, reasonMissed)
	}
}

// busBack: reconnected. The node resyncs before it is ready again: the
// registry bucket (gone if NATS restarted without it), this node's claims
// (re-put unless someone else took them meanwhile), the watch, and a sync to
// every group it failed to publish to.
func (n *Node) busBack() {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.resyncing.Lock()
		defer n.resyncing.Unlock()
		if down := n.downSince.Load(); down != 0 && time.Since(time.Unix(0, down)) >= n.cfg.PeerTimeout-n.cfg.Heartbeat {
			// Away for about the peer timeout: the others may have
			// declared this node lost. It starts over.
			n.fenced()
		}
		for attempt := 0; ; attempt++ {
			select {
			case <-n.closed:
				return
			default:
			}
			if !n.nc.IsConnected() {
				return // the next reconnect resyncs
			}
			err := n.resync()
			if err == nil {
				break
			}
			n.log.Warn().Err(err).Msg("cluster: resync after reconnecting failed; retrying")
			select {
			case <-n.closed:
				return
			case <-time.After(time.Duration(min(attempt+1, 8)) * 250 * time.Millisecond):
			}
		}
		// Peers' silence while this node was away was not theirs.
		now := time.Now()
		n.mu.Lock()
		for _, p := range n.peers {
			p.last = now
		}
		n.mu.Unlock()
		n.sendSyncs()
		n.alive.Store(now.UnixNano()) // before the syncs: no round trip covers them yet
		n.downSince.Store(0)
		n.connected.Store(true)
		n.met.up.Set(1)
		n.log.Info().Msg("cluster: NATS connection back; ready")
	}()
}

func (n *Node) resync() error {
	ctx, cancel := ctxTimeout(5 * time.Second)
	defer cancel()
	if err := n.bindOrder(ctx); err != nil {
		return err
	}
	if err := n.bindRegistry(ctx); err != nil {
		return err
	}
	// Reclaim this node's members: the entries are still ours unless
	// someone else wrote them (a newer claim: 4001) or they are gone (NATS
	// restarted, or the others purged them: put back only if nobody else
	// holds them now).
	n.mu.Lock()
	claims := make([]*claim, 0, len(n.claims))
	for _, c := range n.claims {
		claims = append(claims, c)
	}
	n.mu.Unlock()
	for _, c := range claims {
		n.mu.Lock()
		e, ok := n.index[c.group].get(idOf(c.key))
		n.mu.Unlock()
		switch {
		case ok && e.rev == c.rev:
			continue // untouched
		case ok:
			n.dropClaim(c, statusReplaced, "replaced")
			continue
		}
		rev, err := n.kv().Create(ctx, c.key, n.claimValue())
		if err != nil {
			if errors.Is(err, errKeyExists) {
				n.dropClaim(c, statusReplaced, "replaced")
				continue
			}
			return err
		}
		n.mu.Lock()
		c.rev = rev
		n.mu.Unlock()
	}
	// Entries of this node's members that left while it was away (their
	// deletes failed) must not outlive them.
	n.mu.Lock()
	me := n.epoch.Load()
	stale := map[string]uint64{}
	for g, gi := range n.index {
		for id, e := range gi.members {
			if k := memberKey(g, id); e.Epoch == me && n.claims[k] == nil {
				stale[k] = e.rev
			}
		}
	}
	n.mu.Unlock()
	n.purge(stale, jetstream.KeyValueDelete)
	// Groups only here before may have gained members elsewhere while
	// this node could not hear from them.
	n.closeSpanning("bus_lost")
	return nil
}

func (n *Node) dropClaim(c *claim, code websocket.StatusCode, reason string) {
	n.mu.Lock()
	if n.claims[c.key] == c {
		delete(n.claims, c.key)
	}
	n.mu.Unlock()
	c.c.Close(code, reason)
}

// asyncError handles nats.go's asynchronous errors: a slow consumer on the
// data subscription means chunks were dropped, of unknown groups.
func (n *Node) asyncError(sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub == n.data {
		n.log.Warn().Msg("cluster: NATS slow consumer: chunks were dropped")
		n.met.loss("nats_slow")
		n.closeSpanning("nats_slow")
		return
	}
	n.log.Warn().Err(err).Msg("cluster: NATS error")
}
