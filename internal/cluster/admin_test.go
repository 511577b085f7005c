package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/natstest"
	"github.com/wsproxy/wsproxy/internal/presence"
)

// TestAdminListingsAcrossNodes: with members on three nodes, any node's API
// counts and lists every member, with its node and what only its node knows.
func TestAdminListingsAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	base := adminServer(t, nodes[0])
	dialJoined(t, nodes[0], "a", "g")
	dialJoined(t, nodes[1], "b", "g")
	dialJoined(t, nodes[2], "c", "g")
	dialJoined(t, nodes[1], "h2", "h") // a group with no member on n1
	dialJoined(t, nodes[2], "h3", "h")
	waitMembers(t, "g", 3, nodes...)
	waitMembers(t, "h", 2, nodes...)

	var groups groupsReply
	adminGet(t, base+"/api/groups", &groups)
	if got, want := groups.counts(), map[string]int{"g": 3, "h": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET /api/groups: %v, want %v", got, want)
	}

	for group, want := range map[string][]string{"g": {"a@n1", "b@n2", "c@n3"}, "h": {"h2@n2", "h3@n3"}} {
		var g groupReply
		adminGet(t, groupURL(base, group), &g)
		var got []string
		for _, m := range g.Members {
			got = append(got, m.ID+"@"+m.Node)
			if m.QueuedBytes == nil {
				t.Errorf("group %s: %s on %s: queued_bytes null, though its node answers", group, m.ID, m.Node)
			}
			if time.Since(m.ConnectedSince) > time.Minute || m.ConnectedSince.After(time.Now().Add(time.Second)) {
				t.Errorf("group %s: %s: connected_since %v", group, m.ID, m.ConnectedSince)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("GET /api/groups/%s: %v, want %v", group, got, want)
		}
		if g.Partial == nil || *g.Partial || len(g.MissingNodes) != 0 {
			t.Errorf("GET /api/groups/%s: partial %v, missing %v; want false, none", group, show(g.Partial), g.MissingNodes)
		}
	}

	var conns connectionsReply
	adminGet(t, base+"/api/connections", &conns)
	var got []string
	for _, c := range conns.Connections {
		got = append(got, c.Group+"/"+c.ID+"@"+c.Node)
		if c.Remote == nil || c.QueuedBytes == nil || c.MessagesIn == nil || c.BytesOut == nil {
			t.Errorf("connection %s/%s on %s: a field only its node knows is null", c.Group, c.ID, c.Node)
		}
	}
	if want := []string{"g/a@n1", "g/b@n2", "g/c@n3", "h/h2@n2", "h/h3@n3"}; !slices.Equal(got, want) {
		t.Errorf("GET /api/connections: %v, want %v", got, want)
	}
	if conns.Partial == nil || *conns.Partial {
		t.Errorf("GET /api/connections: partial %v, want false", show(conns.Partial))
	}

	if status, _, _ := adminCall(t, http.MethodGet, groupURL(base, "nobody"), nil); status != http.StatusNotFound {
		t.Errorf("GET a group no node has: %d, want 404", status)
	}
}

// TestAdminPartialWhenNodeSilent: a node whose NATS link is blackholed does
// not answer; a listing elsewhere returns within about AdminTimeout, with
// that node's members (their unknown fields null), "partial": true and the
// node in "missing_nodes"; a kick of its member is a 504.
func TestAdminPartialWhenNodeSilent(t *testing.T) {
	// The peers must not declare n3 lost (and purge its members) during
	// the test.
	_, nodes := cluster3(t, nodeOpts{cluster: func(c *Config) { c.PeerTimeout = 2 * time.Minute }})
	base := adminServer(t, nodes[0])
	dialJoined(t, nodes[0], "a", "g")
	dialJoined(t, nodes[1], "b", "g")
	dialJoined(t, nodes[2], "c", "g")
	waitMembers(t, "g", 3, nodes...)

	nodes[2].fault.Blackhole()
	defer nodes[2].fault.Pass()

	var g groupReply
	took := adminGet(t, groupURL(base, "g"), &g)
	if took > 2*time.Second {
		t.Errorf("GET /api/groups/g took %v with a silent node", took)
	}
	if g.Partial == nil || !*g.Partial || !slices.Equal(g.MissingNodes, []string{"n3"}) {
		t.Errorf("partial %v, missing_nodes %v; want true, [n3]", show(g.Partial), g.MissingNodes)
	}
	known := map[string]bool{}
	for _, m := range g.Members {
		known[m.ID+"@"+m.Node] = m.QueuedBytes != nil
	}
	if want := map[string]bool{"a@n1": true, "b@n2": true, "c@n3": false}; fmt.Sprint(known) != fmt.Sprint(want) {
		t.Errorf("members (id@node: queued_bytes known) %v, want %v", known, want)
	}

	var conns connectionsReply
	took = adminGet(t, base+"/api/connections", &conns)
	if took > 2*time.Second {
		t.Errorf("GET /api/connections took %v with a silent node", took)
	}
	if conns.Partial == nil || !*conns.Partial || !slices.Equal(conns.MissingNodes, []string{"n3"}) {
		t.Errorf("connections: partial %v, missing_nodes %v; want true, [n3]", show(conns.Partial), conns.MissingNodes)
	}
	for _, c := range conns.Connections {
		if (c.Node == "n3") != (c.Remote == nil) {
			t.Errorf("connection %s on %s: remote %v", c.ID, c.Node, c.Remote)
		}
	}

	status, body, took := adminCall(t, http.MethodDelete, groupURL(base, "g")+"/members/c", nil)
	if status != http.StatusGatewayTimeout || took > 2*time.Second {
		t.Errorf("kick of a silent node's member: %d %s after %v, want 504 within 2s", status, body, took)
	}
}

// TestAdminPublishAcrossNodes: a message posted to n1's API reaches the
// group's members on every node, also in a group with no member on n1, and
// also when it is large enough to be streamed; the count includes the
// other nodes' members. A broadcast reaches every member of every node.
func TestAdminPublishAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	base := adminServer(t, nodes[0])
	a, b, c := dialJoined(t, nodes[0], "a", "g"), dialJoined(t, nodes[1], "b", "g"), dialJoined(t, nodes[2], "c", "g")
	k2, k3 := dialJoined(t, nodes[1], "k2", "k"), dialJoined(t, nodes[2], "k3", "k")
	waitMembers(t, "g", 3, nodes...)
	waitMembers(t, "k", 2, nodes...)

	small := []byte("to everyone")
	big := payload("api", 1, 3<<20+5) // over --buffer-bytes: streamed
	for _, tc := range []struct {
		group string
		body  []byte
		want  int
	}{
		{"g", small, 3},
		{"k", small, 2},
		{"k", big, 2},
	} {
		status, reply, _ := adminCall(t, http.MethodPost, groupURL(base, tc.group)+"/messages", tc.body)
		var r struct{ Receivers int }
		if status != http.StatusAccepted || json.Unmarshal(reply, &r) != nil || r.Receivers != tc.want {
			t.Fatalf("POST to %s: %d %s, want 202 with %d receivers", tc.group, status, reply, tc.want)
		}
	}
	a.waitCount(1, 20*time.Second)
	b.waitCount(1, 20*time.Second)
	c.waitCount(1, 20*time.Second)
	k2.waitCount(2, time.Minute)
	k3.waitCount(2, time.Minute)
	for _, cl := range []*client{a, b, c} {
		if m := cl.received(); len(m) != 1 || !bytes.Equal(m[0].data, small) || m[0].typ != websocket.MessageBinary {
			t.Errorf("%s: got %d messages, want the one posted", cl.id, len(m))
		}
	}
	for _, cl := range []*client{k2, k3} {
		if m := cl.received(); len(m) != 2 || !bytes.Equal(m[0].data, small) || !bytes.Equal(m[1].data, big) {
			t.Errorf("%s: got %d messages, want the two posted, in order, whole", cl.id, len(m))
		}
	}
	if status, _, _ := adminCall(t, http.MethodPost, groupURL(base, "nobody")+"/messages", small); status != http.StatusNotFound {
		t.Errorf("POST to a group no node has: %d, want 404", status)
	}

	// A broadcast reaches every connection of every node.
	status, reply, _ := adminCall(t, http.MethodPost, base+"/api/connections/broadcast", []byte("to all"))
	var r struct{ Receivers int }
	if status != http.StatusAccepted || json.Unmarshal(reply, &r) != nil || r.Receivers != 5 {
		t.Fatalf("broadcast: %d %s, want 202 with 5 receivers", status, reply)
	}
	for _, cl := range []*client{a, b, c, k2, k3} {
		want := 2
		if cl == k2 || cl == k3 {
			want = 3
		}
		cl.waitCount(want, 20*time.Second)
		if m := cl.received(); string(m[want-1].data) != "to all" {
			t.Errorf("%s: last message %d bytes, want the broadcast", cl.id, len(m[want-1].data))
		}
	}
}

// TestAdminPublishToRemoteMember: a message posted on n1 to one member on
// another node reaches it and nobody else (a message to the whole group
// after it, from the same node, arrives after it everywhere: whoever has it
// without the first never got the first).
func TestAdminPublishToRemoteMember(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	base := adminServer(t, nodes[0])
	a, b, b2, c := dialJoined(t, nodes[0], "a", "g"), dialJoined(t, nodes[1], "b", "g"), dialJoined(t, nodes[1], "b2", "g"), dialJoined(t, nodes[2], "c", "g")
	waitMembers(t, "g", 4, nodes...)

	status, reply, _ := adminCall(t, http.MethodPost, groupURL(base, "g")+"/members/b/messages", []byte("for b"))
	var r struct{ Receivers int }
	if status != http.StatusAccepted || json.Unmarshal(reply, &r) != nil || r.Receivers != 1 {
		t.Fatalf("POST to member b: %d %s, want 202 with 1 receiver", status, reply)
	}
	if status, _, _ := adminCall(t, http.MethodPost, groupURL(base, "g")+"/messages", []byte("for all")); status != http.StatusAccepted {
		t.Fatalf("POST to g: %d", status)
	}
	b.waitCount(2, 20*time.Second)
	for _, cl := range []*client{a, b2, c} {
		cl.waitCount(1, 20*time.Second)
	}
	if m := b.received(); string(m[0].data) != "for b" || string(m[1].data) != "for all" {
		t.Errorf("b got %q, %q", m[0].data, m[1].data)
	}
	for _, cl := range []*client{a, b2, c} {
		if m := cl.received(); len(m) != 1 || string(m[0].data) != "for all" {
			t.Errorf("%s got %d messages (first %q): the one for b reached it", cl.id, len(m), m[0].data)
		}
	}
	if status, _, _ := adminCall(t, http.MethodPost, groupURL(base, "g")+"/members/nobody/messages", []byte("x")); status != http.StatusNotFound {
		t.Errorf("POST to a member no node has: %d, want 404", status)
	}
}

// TestAdminKickRemote: a kick on n1 of a member on n3 closes it with 4003;
// nobody else is touched; a member no node has is a 404.
func TestAdminKickRemote(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	base := adminServer(t, nodes[0])
	a, c := dialJoined(t, nodes[0], "a", "g"), dialJoined(t, nodes[2], "c", "g")
	c2 := dialJoined(t, nodes[2], "c2", "g")
	waitMembers(t, "g", 3, nodes...)

	if status, body, _ := adminCall(t, http.MethodDelete, groupURL(base, "g")+"/members/c", nil); status != http.StatusNoContent {
		t.Fatalf("kick of c on n3: %d %s, want 204", status, body)
	}
	if code := c.waitClosed(20 * time.Second); code != 4003 {
		t.Fatalf("c closed with %d, want 4003", code)
	}
	waitMembers(t, "g", 2, nodes...)
	for _, cl := range []*client{a, c2} {
		if closed, code := cl.status(); closed {
			t.Errorf("%s closed (%d) by a kick of c", cl.id, code)
		}
	}
	for _, path := range []string{"/members/nobody", "/members/c"} {
		if status, _, _ := adminCall(t, http.MethodDelete, groupURL(base, "g")+path, nil); status != http.StatusNotFound {
			t.Errorf("DELETE %s: %d, want 404", path, status)
		}
	}
	if status, _, _ := adminCall(t, http.MethodDelete, groupURL(base, "nobody")+"/members/c", nil); status != http.StatusNotFound {
		t.Errorf("kick in a group no node has: %d, want 404", status)
	}
}

// TestPresenceAcrossNodes: a watcher on n1 has the other nodes' members in
// its snapshot, and sees joins and leaves on other nodes; an id that moves
// from n1 to n2 is one join with replaced:true, never a leave.
func TestPresenceAcrossNodes(t *testing.T) {
	_, nodes := cluster3(t, nodeOpts{})
	base := adminServer(t, nodes[0])
	y := dialJoined(t, nodes[2], "y", "g")
	waitMembers(t, "g", 1, nodes...)

	w := watch(t, base, "g")
	snap := w.next(20 * time.Second)
	if snap.Type != "snapshot" || len(snap.Members) != 1 || snap.Members[0].ID != "y" {
		t.Fatalf("first event %+v, want a snapshot with y (on n3)", snap)
	}
	x := dialJoined(t, nodes[1], "x", "g")
	if ev := w.next(20 * time.Second); ev.Type != "join" || ev.ID != "x" || ev.Replaced || ev.Seq != snap.Seq+1 {
		t.Fatalf("after x joined on n2: %+v, want its join", ev)
	}
	x.conn.Close(websocket.StatusNormalClosure, "")
	if ev := w.next(20 * time.Second); ev.Type != "leave" || ev.ID != "x" || ev.Seq != snap.Seq+2 ||
		ev.Code != 0 || ev.Reason != presence.RemoteLeaveReason {
		t.Fatalf("after x left n2: %+v, want its leave (code 0, %q)", ev, presence.RemoteLeaveReason)
	}

	// z joins here, then again on n2: the one on n1 is replaced (4001).
	z1 := dialJoined(t, nodes[0], "z", "g")
	if ev := w.next(20 * time.Second); ev.Type != "join" || ev.ID != "z" || ev.Replaced {
		t.Fatalf("after z joined on n1: %+v, want its join", ev)
	}
	waitMembers(t, "g", 2, nodes...)
	dialJoined(t, nodes[1], "z", "g")
	if ev := w.next(20 * time.Second); ev.Type != "join" || ev.ID != "z" || !ev.Replaced {
		t.Fatalf("after z joined on n2: %+v, want a join with replaced:true", ev)
	}
	if code := z1.waitClosed(20 * time.Second); code != statusReplaced {
		t.Fatalf("z on n1 closed with %d, want 4001", code)
	}
	// v joins on n2, then here: one join with replaced:true, no leave.
	v2 := dialJoined(t, nodes[1], "v", "g")
	if ev := w.next(20 * time.Second); ev.Type != "join" || ev.ID != "v" || ev.Replaced {
		t.Fatalf("after v joined on n2: %+v, want its join", ev)
	}
	waitMembers(t, "g", 3, nodes...)
	dialJoined(t, nodes[0], "v", "g")
	if ev := w.next(20 * time.Second); ev.Type != "join" || ev.ID != "v" || !ev.Replaced {
		t.Fatalf("after v joined on n1: %+v, want a join with replaced:true", ev)
	}
	if code := v2.waitClosed(20 * time.Second); code != statusReplaced {
		t.Fatalf("v on n2 closed with %d, want 4001", code)
	}
	// Nothing more about z or v: y leaves, and that is the next event.
	y.conn.CloseNow()
	if ev := w.next(20 * time.Second); ev.Type != "leave" || ev.ID != "y" {
		t.Fatalf("after y was cut on n3: %+v, want y's leave (and nothing about z)", ev)
	}
}

// show is a JSON boolean as read: true, false or null.
func show(b *bool) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprint(*b)
}

// TestAdminSurveyInParts: a node whose answer is larger than half of NATS's
// max_payload answers in parts; every part arrives and counts.
func TestAdminSurveyInParts(t *testing.T) {
	ns := natstest.Start(t, natstest.MaxPayload(8<<10))
	n1, n2 := startNode(t, ns, "n1", nodeOpts{}), startNode(t, ns, "n2", nodeOpts{})
	base := adminServer(t, n1)
	const members = 60 // about 190 bytes each in the answer: more than max_payload
	for i := range members {
		dialJoined(t, n2, fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 120)), "g")
	}
	waitMembers(t, "g", members, n1)
	var g groupReply
	adminGet(t, groupURL(base, "g"), &g)
	if len(g.Members) != members || g.Partial == nil || *g.Partial {
		t.Fatalf("%d members, partial %s; want %d, false", len(g.Members), show(g.Partial), members)
	}
	for _, m := range g.Members {
		if m.QueuedBytes == nil || m.Node != "n2" {
			t.Fatalf("%s on %s: queued_bytes %v", m.ID, m.Node, m.QueuedBytes)
		}
	}
}
