package main

import (
	"io"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// watch prints the members, then one line per join, replacement and leave,
// with why in the page's words and the close code; a refusal exits 3 with
// the proxy's reason; --reconnect=never exits 4 on 1001.
func TestWatchCommand(t *testing.T) {
	p := proxytest.Start(t)
	dialRaw(t, p, "alice", "w")
	w := start(t, p, nil, nil, "watch", "--group", "w")
	waitFor(t, "the snapshot line", func() bool { return strings.Contains(w.stdout.String(), " in w: alice (1)\n") })

	bob := dialRaw(t, p, "bob", "w")
	waitFor(t, "bob's join", func() bool { return strings.Contains(w.stdout.String(), " bob joined\n") })
	_ = bob.Close()
	waitFor(t, "bob's leave", func() bool { return strings.Contains(w.stdout.String(), " bob left (1000 closed by client)\n") })
	if err := p.Server().Kick("w", "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's kick", func() bool {
		return strings.Contains(w.stdout.String(), " alice was kicked by an administrator (4003 kicked)\n")
	})
	dialRaw(t, p, "carol", "w")
	dialRaw(t, p, "carol", "w")
	waitFor(t, "carol's replacement", func() bool { return strings.Contains(w.stdout.String(), " carol reconnected\n") })
	if n := strings.Count(w.stdout.String(), "\n"); n != 6 {
		t.Fatalf("%d lines:\n%s", n, w.stdout.String())
	}
	w.cancel()
	if code := w.wait(t); code != exitOK {
		t.Fatalf("watch after ^C: exit %d", code)
	}

	bad := start(t, p, nil, nil, "watch", "--group", strings.Repeat("x", 200))
	if code := bad.wait(t); code != exitRefused || !strings.Contains(bad.stderr.String(), "400 Bad Request: parameter groupName") {
		t.Fatalf("a bad group: exit %d, stderr:\n%s", code, bad.stderr.String())
	}

	once := start(t, p, nil, nil, "watch", "--group", "w", "--reconnect=never")
	waitFor(t, "the snapshot line", func() bool { return strings.Contains(once.stdout.String(), " in w: carol (1)\n") })
	p.Restart()
	if code := once.wait(t); code != exitClosed || !strings.Contains(once.stderr.String(), "1001 going away; not reconnecting") {
		t.Fatalf("after a restart: exit %d, stderr:\n%s", code, once.stderr.String())
	}
}

// chat prints presence lines for others (not for itself), from a watcher
// beside its connection; --presence=false prints none.
func TestChatPresence(t *testing.T) {
	p := proxytest.Start(t)
	ar, aw := io.Pipe()
	defer aw.Close()
	alice := start(t, p, ar, nil, "chat", "--group", "cp", "--id", "alice")
	waitFor(t, "alice's snapshot line", func() bool { return strings.Contains(alice.stdout.String(), " * in cp: ") })
	br, bw := io.Pipe()
	defer bw.Close()
	bob := start(t, p, br, nil, "chat", "--group", "cp", "--id", "bob", "--presence=false")
	waitFor(t, "bob joined", func() bool { return strings.Contains(alice.stdout.String(), " * bob joined\n") })
	if _, err := io.WriteString(bw, "/quit\n"); err != nil {
		t.Fatal(err)
	}
	if code := bob.wait(t); code != exitOK {
		t.Fatalf("bob: exit %d", code)
	}
	waitFor(t, "bob left", func() bool { return strings.Contains(alice.stdout.String(), " * bob left (1000 closed by client)\n") })
	if strings.Contains(alice.stdout.String(), "alice joined") {
		t.Fatalf("alice's own join printed:\n%s", alice.stdout.String())
	}
	if strings.Contains(bob.stdout.String(), "*") {
		t.Fatalf("bob printed presence with --presence=false:\n%s", bob.stdout.String())
	}
}

// presenceLine skips chat's own joins and leaves (which one chat sees
// depends on whether its connection or its watcher came first) and marks
// it in a snapshot.
func TestPresenceLineSelf(t *testing.T) {
	for _, tc := range []struct {
		ev   client.Event
		want string
	}{
		{client.Event{Type: client.Join, ID: "me"}, ""},
		{client.Event{Type: client.Join, ID: "me", Replaced: true}, ""},
		{client.Event{Type: client.Leave, ID: "me", Code: 1006}, ""},
		{client.Event{Type: client.Join, ID: "you"}, "you joined"},
		{client.Event{Type: client.Leave, ID: "you", Code: 1008, Reason: "slow consumer"}, "you was too slow to receive (1008 slow consumer)"},
		{client.Event{Type: client.Snapshot, Group: "g", Members: []client.Member{{ID: "me"}, {ID: "you"}}}, "in g: me (you), you (2)"},
		{client.Event{Type: client.Snapshot, Group: "g"}, "in g: nobody"},
		{client.Event{Type: client.Join, ID: "x\x1b[2J"}, "x\uFFFD[2J joined"},
	} {
		if got := presenceLine(tc.ev, "me"); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.ev, got, tc.want)
		}
	}
}
