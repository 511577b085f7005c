package forward

import (
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCloseGroupCutoff: the bus closes the members that connected before its
// verdict and leaves later ones alone (they can have missed nothing); a zero
// cutoff closes every member; other groups are untouched.
func TestCloseGroupCutoff(t *testing.T) {
	ts := startServer(t)
	early := dial(t, ts, "early", "g")
	other := dial(t, ts, "other", "h")
	cutoff := time.Now()
	late := dial(t, ts, "late", "g")
	ts.CloseGroup("g", cutoff, 4004, "missed messages")
	expectClose(t, early, 4004, 10*time.Second)
	// late is still a member: a message sent now reaches it.
	sender := dial(t, ts, "sender", "g")
	writeMsg(t, sender, websocket.MessageText, []byte("after"))
	if _, b := readMsg(t, late, 10*time.Second); string(b) != "after" {
		t.Fatalf("late got %q, want \"after\"", b)
	}
	ts.CloseGroup("g", time.Time{}, 4004, "missed messages")
	expectClose(t, late, 4004, 10*time.Second)
	expectClose(t, sender, 4004, 10*time.Second)
	peer := dial(t, ts, "peer", "h")
	writeMsg(t, peer, websocket.MessageText, []byte("h goes on"))
	if _, b := readMsg(t, other, 10*time.Second); string(b) != "h goes on" {
		t.Fatalf("other got %q", b)
	}
}
