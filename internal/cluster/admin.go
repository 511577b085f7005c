package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/presence"
	"github.com/wsproxy/wsproxy/internal/session"
)

// The cluster-wide admin API and presence (SPEC sections 8, 11, 12).
//
// Who is where comes from the member registry's index, which every node
// keeps. What only the holding node knows of a member (its address, queued
// bytes, counters) comes from a survey: one request on <cluster>.a, which
// every node subscribes to, naming the epochs that must answer; each of
// those answers on the request's reply subject with its members, in as
// many replies as max_payload needs, the last without "more". A kick of a
// member on another node is a request on the same subject naming the
// holder's epoch; only the holder answers. A node's epoch changes when it
// is fenced: it answers under its current epoch, so a request addressed to
// its old one (whose members are being purged) goes unanswered, as it
// should. Every request is bounded by AdminTimeout: a node that does not
// answer in time is reported missing, never waited for.
//
// Presence: the registry watch sees every join (a put) and leave (a delete)
// of every node; those of other nodes are handed to the presence hub
// (presenceEntry, called by applyEntry), whose snapshots list the other
// nodes' members from the index (presenceMembers).

// AdminTimeout bounds every admin request to other nodes.
const AdminTimeout = 500 * time.Millisecond

// adminRequest is what travels on <cluster>.a.
type adminRequest struct {
	Op    string   `json:"op"`           // opSurvey or opKick
	To    []string `json:"to"`           // the epochs (hex) that must answer
	Group string   `json:"g,omitempty"`  // survey: empty for every group
	ID    string   `json:"id,omitempty"` // kick
}

const (
	opSurvey = "survey"
	opKick   = "kick"
)

// adminReply is one answer. A survey's answer may take several replies:
// all but the last have More set.
type adminReply struct {
	Epoch   string         `json:"e"`
	Members []memberReport `json:"m,omitempty"`
	More    bool           `json:"more,omitempty"`
	Err     string         `json:"err,omitempty"` // kick: errNoMember's text
}

// memberReport is what a node knows of one of its members.
type memberReport struct {
	Group       string `json:"g"`
	ID          string `json:"id"`
	Remote      string `json:"r"`
	Queued      int64  `json:"q"`
	MessagesIn  int64  `json:"mi"`
	BytesIn     int64  `json:"bi"`
	MessagesOut int64  `json:"mo"`
	BytesOut    int64  `json:"bo"`
}

// startAdmin subscribes to the admin subject and links the presence hub to
// the registry. Called by Start once connected.
func (n *Node) startAdmin() error {
	if _, err := n.nc.Subscribe(n.adminSubject(), n.onAdmin); err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	n.admin.Store(n.nc)
	n.local.Presence().SetRemote(n.presenceMembers)
	return nil
}

func (n *Node) adminSubject() string { return n.prefix + "a" }

// onAdmin answers another node's admin request, if it names this node.
func (n *Node) onAdmin(msg *nats.Msg) {
	var req adminRequest
	if json.Unmarshal(msg.Data, &req) != nil || msg.Reply == "" {
		return
	}
	me := epochHex(n.epoch.Load())
	if !slices.Contains(req.To, me) {
		return
	}
	switch req.Op {
	case opSurvey:
		n.answerSurvey(msg.Reply, me, req.Group)
	case opKick:
		rep := adminReply{Epoch: me}
		if !n.kick(req.Group, req.ID) {
			rep.Err = forward.ErrNoMember.Error()
		} else {
			n.log.Info().Str("group", req.Group).Str("id", req.ID).Msg("cluster: member kicked at another node's request")
		}
		b, _ := json.Marshal(rep)
		_ = n.nc.Publish(msg.Reply, b)
	}
}

// answerSurvey sends this node's members of group (every group if empty)
// to reply, in replies of at most half of max_payload each.
func (n *Node) answerSurvey(reply, me, group string) {
	limit := int(n.nc.MaxPayload()) / 2
	rep := adminReply{Epoch: me}
	size := 64
	send := func(more bool) {
		rep.More = more
		b, _ := json.Marshal(rep)
		_ = n.nc.Publish(reply, b)
		rep.Members, size = nil, 64
	}
	for _, m := range n.local.MemberStatuses(group) {
		r := memberReport{
			Group: m.Group, ID: m.ID, Remote: m.Remote, Queued: m.Queued,
			MessagesIn: m.Stats.MessagesIn, BytesIn: m.Stats.BytesIn,
			MessagesOut: m.Stats.MessagesOut, BytesOut: m.Stats.BytesOut,
		}
		b, _ := json.Marshal(r)
		if size+len(b) > limit && len(rep.Members) > 0 {
			send(true)
		}
		rep.Members = append(rep.Members, r)
		size += len(b) + 1
	}
	send(false)
}

// NodeName is this node's name (the "node" of every member it holds).
func (n *Node) NodeName() string { return n.cfg.Node }

// RemoteMembers is the number of members of group on other nodes, per the
// registry (forward.Directory).
func (n *Node) RemoteMembers(group string) int {
	me := n.epoch.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	gi := n.index[group]
	if gi == nil {
		return 0
	}
	return len(gi.members) - gi.epochs[me]
}

// HasRemoteMember reports whether member id of group is on another node,
// per the registry (forward.Directory).
func (n *Node) HasRemoteMember(group, id string) bool {
	me := n.epoch.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.index[group].get(id)
	return ok && e.Epoch != me
}

// RemoteCounts is the number of members of every group on other nodes, per
// the registry (groups with none there are left out).
func (n *Node) RemoteCounts() map[string]int {
	me := n.epoch.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.index))
	for g, gi := range n.index {
		if c := len(gi.members) - gi.epochs[me]; c > 0 {
			out[g] = c
		}
	}
	return out
}

// Survey lists the members of group (of every group if group is empty) on
// other nodes: who and where from the registry, the rest from their nodes,
// asked within AdminTimeout (or ctx, if sooner). The members of nodes that
// did not answer in time have Known false; missing is those nodes' names,
// sorted. Members are ordered by group, then id.
func (n *Node) Survey(ctx context.Context, group string) (members []forward.MemberStatus, missing []string) {
	me := n.epoch.Load()
	names := map[uint64]string{} // nodes to ask
	n.mu.Lock()
	add := func(g string, gi *gindex) {
		for id, e := range gi.members {
			if e.Epoch == me {
				continue
			}
			members = append(members, forward.MemberStatus{Group: g, ID: id, Node: e.Node, Since: time.UnixMilli(e.Since).UTC()})
			names[e.Epoch] = e.Node
		}
	}
	if group != "" {
		if gi := n.index[group]; gi != nil {
			add(group, gi)
		}
	} else {
		for g, gi := range n.index {
			add(g, gi)
		}
	}
	n.mu.Unlock()
	sort.Slice(members, func(i, j int) bool {
		a, b := members[i], members[j]
		return a.Group < b.Group || a.Group == b.Group && a.ID < b.ID
	})
	if len(names) == 0 {
		return members, nil
	}
	req := adminRequest{Op: opSurvey, Group: group}
	for e := range names {
		req.To = append(req.To, epochHex(e))
	}
	reports, answered := n.ask(ctx, req)
	byEpoch := map[string]uint64{}
	for e := range names {
		byEpoch[epochHex(e)] = e
	}
	type key struct{ group, id string }
	got := map[key]memberReport{}
	for _, r := range reports {
		got[key{r.Group, r.ID}] = r
	}
	for i := range members {
		m := &members[i]
		r, ok := got[key{m.Group, m.ID}]
		if !ok {
			// Not reported: gone since, or its node did not answer.
			continue
		}
		m.Known, m.Remote, m.Queued = true, r.Remote, r.Queued
		m.Stats.MessagesIn, m.Stats.BytesIn = r.MessagesIn, r.BytesIn
		m.Stats.MessagesOut, m.Stats.BytesOut = r.MessagesOut, r.BytesOut
	}
	seen := map[string]bool{}
	for hex, e := range byEpoch {
		if !answered[hex] && !seen[names[e]] {
			seen[names[e]] = true
			missing = append(missing, names[e])
		}
	}
	sort.Strings(missing)
	return members, missing
}

// kick closes this node's member id of group with 4003, also if it is
// still joining (registered, not yet in the group here: it is closed as
// soon as it joins). It reports whether there was such a member.
func (n *Node) kick(group, id string) bool {
	if n.local.Kick(group, id) == nil {
		return true
	}
	n.mu.Lock()
	c := n.claims[memberKey(group, id)]
	n.mu.Unlock()
	if c == nil {
		return false
	}
	c.c.Close(session.StatusKicked, "kicked")
	return true
}

// ask sends req on the admin subject and gathers the answers of the nodes
// it names until each has answered in full, or AdminTimeout (or ctx) ends.
// A report comes only from a node that answered in full, each once.
func (n *Node) ask(ctx context.Context, req adminRequest) (reports []memberReport, answered map[string]bool) {
	answered = map[string]bool{}
	nc := n.admin.Load()
	if nc == nil {
		return nil, answered
	}
	ctx, cancel := context.WithTimeout(ctx, AdminTimeout)
	defer cancel()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, answered
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, _ := json.Marshal(req)
	if err := nc.PublishRequest(n.adminSubject(), inbox, data); err != nil {
		return nil, answered
	}
	pending := map[string][]memberReport{}
	for _, e := range req.To {
		pending[e] = nil
	}
	for len(pending) > 0 {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		var rep adminReply
		if json.Unmarshal(msg.Data, &rep) != nil {
			continue
		}
		part, ok := pending[rep.Epoch]
		if !ok {
			continue
		}
		part = append(part, rep.Members...)
		if rep.More {
			pending[rep.Epoch] = part
			continue
		}
		delete(pending, rep.Epoch)
		answered[rep.Epoch] = true
		reports = append(reports, part...)
	}
	return reports, answered
}

// KickRemote closes member id of group on the node that holds it (per the
// registry) with 4003, asking that node within AdminTimeout (or ctx, if
// sooner). It fails with forward.ErrNoGroup or forward.ErrNoMember if no
// other node has it, with an error wrapping context.DeadlineExceeded if the
// holder did not answer in time, and with another error if the request
// could not be sent (this node is cut off from NATS).
func (n *Node) KickRemote(ctx context.Context, group, id string) error {
	me := n.epoch.Load()
	n.mu.Lock()
	gi := n.index[group]
	e, ok := gi.get(id)
	n.mu.Unlock()
	switch {
	case ok && e.Epoch == me && n.kick(group, id):
		return nil // joining here
	case gi == nil:
		return forward.ErrNoGroup
	case !ok || e.Epoch == me:
		return forward.ErrNoMember
	}
	nc := n.admin.Load()
	if nc == nil {
		return errors.New("cluster: not connected yet")
	}
	ctx, cancel := context.WithTimeout(ctx, AdminTimeout)
	defer cancel()
	data, _ := json.Marshal(adminRequest{Op: opKick, To: []string{epochHex(e.Epoch)}, Group: group, ID: id})
	msg, err := nc.RequestWithContext(ctx, n.adminSubject(), data)
	if err != nil {
		// No responders: no other node listens any more (the holder is
		// gone too); to the caller, the holder did not answer.
		if ctx.Err() != nil || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("cluster: node %s did not answer in %v: %w", e.Node, AdminTimeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("cluster: kick on node %s: %w", e.Node, err)
	}
	var rep adminReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("cluster: kick on node %s: %w", e.Node, err)
	}
	if rep.Err != "" {
		return forward.ErrNoMember // it left meanwhile
	}
	return nil
}

// presenceMembers lists group's members on other nodes for the presence
// hub (presence.RemoteLister: it takes only n.mu).
func (n *Node) presenceMembers(group string) []presence.RemoteMember {
	me := n.epoch.Load()
	n.mu.Lock()
	defer n.mu.Unlock()
	gi := n.index[group]
	if gi == nil {
		return nil
	}
	out := make([]presence.RemoteMember, 0, len(gi.members))
	for id, e := range gi.members {
		if e.Epoch != me {
			out = append(out, presence.RemoteMember{ID: id, Since: time.UnixMilli(e.Since), Holder: e.Epoch})
		}
	}
	return out
}

// presenceEntry hands a registry change of another node's member to the
// presence hub. applyEntry calls it for every change it applies, without
// n.mu held, in the registry's order.
func (n *Node) presenceEntry(group, id string, e jetstream.KeyValueEntry) {
	hub := n.local.Presence()
	if hub.Watched() == 0 {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		hub.RemoteLeft(group, id)
		return
	}
	var v regValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Epoch == n.epoch.Load() {
		return // this node's own: the local registry reports it
	}
	hub.RemoteJoined(group, presence.RemoteMember{ID: id, Since: time.UnixMilli(v.Since), Holder: v.Epoch})
}

var _ forward.Directory = (*Node)(nil)
