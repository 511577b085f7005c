package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsproxy/wsproxy/internal/forward"
)

// The order of streams across nodes. On one node, a group's StreamOrder
// makes every receiver meet concurrent streamed messages in one order, so
// that no two producers each wait for a receiver busy with the other's.
// Across nodes each node would place its own node's stream first, and two
// nodes streaming into one group at once could each wait for the other
// forever. So the origin of a stream into a group with members on other
// nodes first takes the group's lease, a key in a JetStream KV bucket that
// only one node can create; it places the stream here, sends it, and holds
// the lease until every node with members has placed it (or
// --write-timeout passes), then deletes the key. Every node then places the
// group's streams in the order the lease gave them. The bucket's TTL frees
// the lease of a node that died holding it.

// leaseTTL is how long a lease outlives a holder that never deletes it.
func (n *Node) leaseTTL() time.Duration { return n.cfg.WriteTimeout + 5*time.Second }

// bindOrder creates (or finds) the lease bucket.
func (n *Node) bindOrder(ctx context.Context) error {
	kv, err := n.bucket(ctx, jetstream.KeyValueConfig{
		Bucket:      n.cfg.Name + "_order",
		Description: "wsproxy stream order: o.<group> is held while a stream is placed on every node",
		Storage:     jetstream.MemoryStorage,
		History:     1,
		TTL:         n.leaseTTL(),
	})
	if err != nil {
		return fmt.Errorf("cluster: order bucket: %w", err)
	}
	n.mu.Lock()
	n.order = kv
	n.mu.Unlock()
	return nil
}

func (n *Node) orderKV() jetstream.KeyValue {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.order
}

// lease is a held stream-order lease, waiting for the nodes' placements.
type lease struct {
	key  string
	rev  uint64
	want map[uint64]bool // nodes that have not placed the stream yet
	done chan struct{}   // closed once want is empty
}

type placedKey struct {
	g64 string
	seq uint64
}

// takeLease waits (parked) for group's stream-order lease. It returns nil
// if the group has no members on other nodes, or if m.Stop closed.
func (n *Node) takeLease(og *outGroup, m forward.OutMessage) *lease {
	me := n.epoch.Load()
	n.mu.Lock()
	want := map[uint64]bool{}
	for e := range n.remoteNodesLocked(og.name) {
		if e != me {
			want[e] = true
		}
	}
	n.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	kv := n.orderKV()
	key := "o." + og.g64
	parked := false
	defer func() {
		if parked {
			m.Unpark()
		}
	}()
	start := time.Now()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rev, err := kv.Create(ctx, key, []byte(epochHex(me)))
		cancel()
		if err == nil {
			n.met.leaseWait(time.Since(start))
			return &lease{key: key, rev: rev, want: want, done: make(chan struct{})}
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			// The registry is unreachable: the bus is failing, and
			// the loss it causes is handled there. Go on unordered.
			n.log.Warn().Err(err).Str("group", og.name).Msg("cluster: stream order lease unavailable")
			return nil
		}
		if !parked {
			m.Park()
			parked = true
		}
		select {
		case <-time.After(wait):
		case <-m.Stop:
			return nil
		case <-n.closed:
			return nil
		}
	}
}

// holdLease registers l for the placements of the stream whose first chunk
// is seq, and releases it once every node has placed it, or after
// --write-timeout.
func (n *Node) holdLease(og *outGroup, l *lease, seq uint64) {
	k := placedKey{og.g64, seq}
	n.mu.Lock()
	n.leases[k] = l
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(n.cfg.WriteTimeout)
		defer t.Stop()
		select {
		case <-l.done:
		case <-t.C:
			n.log.Warn().Str("group", og.name).Msg("cluster: a node did not place a stream in time; releasing the stream order")
		case <-n.closed:
		}
		n.mu.Lock()
		delete(n.leases, k)
		n.mu.Unlock()
		n.releaseLease(l)
	}()
}

func (n *Node) releaseLease(l *lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = n.orderKV().Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}

// onPlaced records that node e placed the stream whose first chunk was seq.
func (n *Node) onPlaced(e, seq uint64, g64 string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.leases[placedKey{g64, seq}]
	if l == nil || !l.want[e] {
		return
	}
	delete(l.want, e)
	if len(l.want) == 0 {
		close(l.done)
	}
}

func (n *Node) sendPlaced(origin, seq uint64, g64 string) {
	_ = n.nc.Publish(n.nodeSubject(origin), appendPlaced(nil, n.epoch.Load(), seq, g64))
}
