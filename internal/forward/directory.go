package forward

import (
	"time"

	"github.com/wsproxy/wsproxy/internal/session"
)

// Directory is what a Bus may also know: which members the other nodes hold
// (package cluster's member registry). A Server whose Bus is a Directory
// lets the admin API publish to a group that has no member here, to one
// member on another node (Publish), and to every member of every node
// (Broadcast); without one, they reach this node's members only.
type Directory interface {
	// RemoteMembers is the number of members of groupName on other nodes.
	RemoteMembers(groupName string) int
	// HasRemoteMember reports whether member id of groupName is on
	// another node.
	HasRemoteMember(groupName, id string) bool
	// RemoteCounts is the number of members of every group with members
	// on other nodes.
	RemoteCounts() map[string]int
}

// directory is the server's Bus as a Directory, or nil.
func (s *Server) directory() Directory {
	d, _ := s.bus.(Directory)
	return d
}

// MemberStatus is one member as the node holding it sees it, for the admin
// API. A status of a member on another node that did not answer in time
// has Known false and only Group, ID, Node and Since set.
type MemberStatus struct {
	Group, ID string
	Node      string // the holding node's name (empty on a single node)
	Since     time.Time
	Known     bool // the fields below are set
	Remote    string
	Queued    int64
	Stats     session.Stats
}

// MemberStatuses is the status of every member of groupName on this node
// (every member of every group if groupName is empty), by group and id.
func (s *Server) MemberStatuses(groupName string) []MemberStatus {
	var sessions []*session.Session
	if groupName == "" {
		sessions = s.registry.Sessions()
	} else if g := s.registry.Get(groupName); g != nil {
		sessions = g.Members()
	}
	out := make([]MemberStatus, len(sessions))
	for i, m := range sessions {
		out[i] = MemberStatus{
			Group: m.Group, ID: m.ID, Since: m.Since, Known: true,
			Remote: m.Remote, Queued: m.QueuedBytes(), Stats: m.Stats(),
		}
	}
	return out
}
