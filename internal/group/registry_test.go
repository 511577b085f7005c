package group

import (
	"net"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/session"
)

func newSession(t *testing.T, id, group string) *session.Session {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return session.New(nil, hijack.NewConn(a, 0), id, group, session.Config{QueueBytes: 1024}, zerolog.Nop(), metrics.New())
}

func TestJoinReplaceLeave(t *testing.T) {
	r := NewRegistry()
	a := newSession(t, "a", "g")
	g, replaced, leaveA := r.Join(a)
	if replaced != nil || r.Count() != 1 || len(g.Members()) != 1 {
		t.Fatalf("first join: replaced %v count %d", replaced, r.Count())
	}
	a2 := newSession(t, "a", "g")
	g2, replaced, leaveA2 := r.Join(a2)
	if replaced != a || g2 != g {
		t.Fatalf("same id: replaced %v, same group %v", replaced, g2 == g)
	}
	other := newSession(t, "a", "h") // same id, other group: no replacement
	_, replaced, leaveOther := r.Join(other)
	if replaced != nil || r.Count() != 2 {
		t.Fatalf("other group: replaced %v count %d", replaced, r.Count())
	}
	// The replaced session's leave must not remove its replacement.
	leaveA()
	if r.Member("g", "a") != a2 || len(g.Members()) != 1 {
		t.Fatal("old session's leave removed the newcomer")
	}
	leaveA2()
	leaveA2() // idempotent
	if r.Get("g") != nil || r.Count() != 1 {
		t.Fatalf("empty group still there: count %d", r.Count())
	}
	leaveOther()
	if r.Count() != 0 || len(r.Groups()) != 0 {
		t.Fatal("registry not empty")
	}
}

func TestMembersSnapshotIsStable(t *testing.T) {
	r := NewRegistry()
	a, b := newSession(t, "b", "g"), newSession(t, "a", "g")
	g, _, leaveA := r.Join(a)
	_, _, leaveB := r.Join(b)
	snap := g.Members()
	if len(snap) != 2 || snap[0].ID != "a" || snap[1].ID != "b" {
		t.Fatalf("members not ordered by id: %v, %v", snap[0].ID, snap[1].ID)
	}
	leaveA()
	if len(snap) != 2 {
		t.Fatal("a snapshot changed under its reader")
	}
	if len(g.Members()) != 1 {
		t.Fatal("leave not visible")
	}
	leaveB()
}
