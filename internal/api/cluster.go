package api

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/httpjson"
)

// Cluster is the rest of the cluster, as the API sees it (package cluster's
// Node implements it). This node's members always come from this node;
// Cluster adds the others'. Publishing needs nothing from here: with a
// cluster bus, forward.Server.Publish reaches other nodes itself.
type Cluster interface {
	// NodeName is this node's name.
	NodeName() string
	// RemoteCounts is the number of members of each group on other nodes.
	RemoteCounts() map[string]int
	// Survey lists the members of group (every group if empty) on other
	// nodes, ordered by group then id, asking their nodes for what only
	// they know within a bounded time (and ctx). Members of nodes that did
	// not answer have Known false; missing names those nodes.
	Survey(ctx context.Context, group string) (members []forward.MemberStatus, missing []string)
	// KickRemote closes member id of group with 4003 on the other node
	// holding it: forward.ErrNoGroup or forward.ErrNoMember if none does,
	// an error wrapping context.DeadlineExceeded if it did not answer in
	// time.
	KickRemote(ctx context.Context, group, id string) error
}

// In a cluster, listings cover every node: each member carries its "node",
// and the fields only its node knows are null when that node did not answer
// in time; the reply then says "partial": true and names the nodes in
// "missing_nodes".

func (a *api) listGroupsCluster(w http.ResponseWriter, _ *http.Request) {
	counts := a.opts.Cluster.RemoteCounts()
	for _, g := range a.fwd.Registry().Groups() {
		counts[g.Name] += len(g.Members())
	}
	out := make([]groupSummary, 0, len(counts))
	for name, n := range counts {
		out = append(out, groupSummary{Name: name, Members: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	httpjson.Write(w, http.StatusOK, struct {
		Groups []groupSummary `json:"groups"`
	}{out})
}

// clusterMember is one entry of GET /api/groups/{group} in a cluster.
type clusterMember struct {
	ID             string    `json:"id"`
	Node           string    `json:"node"`
	ConnectedSince time.Time `json:"connected_since"`
	QueuedBytes    *int64    `json:"queued_bytes"`
}

func (a *api) getGroupCluster(w http.ResponseWriter, r *http.Request, name string) {
	all, missing := a.members(r.Context(), name)
	if len(all) == 0 {
		httpjson.Error(w, http.StatusNotFound, "no such group")
		return
	}
	out := make([]clusterMember, len(all))
	for i, m := range all {
		out[i] = clusterMember{ID: m.ID, Node: m.Node, ConnectedSince: m.Since.UTC()}
		if m.Known {
			out[i].QueuedBytes = &m.Queued
		}
	}
	httpjson.Write(w, http.StatusOK, struct {
		Name         string          `json:"name"`
		Members      []clusterMember `json:"members"`
		Partial      bool            `json:"partial"`
		MissingNodes []string        `json:"missing_nodes,omitempty"`
	}{name, out, len(missing) > 0, missing})
}

// clusterConnection is one entry of GET /api/connections in a cluster.
type clusterConnection struct {
	Group          string    `json:"group"`
	ID             string    `json:"id"`
	Node           string    `json:"node"`
	Remote         *string   `json:"remote"`
	ConnectedSince time.Time `json:"connected_since"`
	QueuedBytes    *int64    `json:"queued_bytes"`
	MessagesIn     *int64    `json:"messages_in"`
	BytesIn        *int64    `json:"bytes_in"`
	MessagesOut    *int64    `json:"messages_out"`
	BytesOut       *int64    `json:"bytes_out"`
}

func (a *api) listConnectionsCluster(w http.ResponseWriter, r *http.Request) {
	all, missing := a.members(r.Context(), "")
	out := make([]clusterConnection, len(all))
	for i := range all {
		m := &all[i]
		out[i] = clusterConnection{Group: m.Group, ID: m.ID, Node: m.Node, ConnectedSince: m.Since.UTC()}
		if m.Known {
			c := &out[i]
			c.Remote, c.QueuedBytes = &m.Remote, &m.Queued
			c.MessagesIn, c.BytesIn = &m.Stats.MessagesIn, &m.Stats.BytesIn
			c.MessagesOut, c.BytesOut = &m.Stats.MessagesOut, &m.Stats.BytesOut
		}
	}
	httpjson.Write(w, http.StatusOK, struct {
		Connections  []clusterConnection `json:"connections"`
		Partial      bool                `json:"partial"`
		MissingNodes []string            `json:"missing_nodes,omitempty"`
	}{out, len(missing) > 0, missing})
}

// members is this node's members of group (every group if empty) and the
// other nodes', ordered by group then id, and the nodes that did not answer.
func (a *api) members(ctx context.Context, group string) ([]forward.MemberStatus, []string) {
	local := a.fwd.MemberStatuses(group)
	node := a.opts.Cluster.NodeName()
	here := make(map[[2]string]bool, len(local))
	for i := range local {
		local[i].Node = node
		here[[2]string{local[i].Group, local[i].ID}] = true
	}
	remote, missing := a.opts.Cluster.Survey(ctx, group)
	all := local
	for _, m := range remote {
		// An id replaced here from another node may linger there for a
		// moment: this node's own is the one that counts.
		if !here[[2]string{m.Group, m.ID}] {
			all = append(all, m)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		x, y := all[i], all[j]
		return x.Group < y.Group || x.Group == y.Group && x.ID < y.ID
	})
	return all, missing
}
