package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const testAdminToken = "admin-watch-token-0123456789abcdef"

// dialEvents connects to p's /ws/events for group with opts.
func dialEvents(t testing.TB, p *proc, group string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	opts.HTTPClient = httpClient
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, p.ws()+"/events?groupName="+group, opts)
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// TestAdminTokenWatches: with --auth=jwt, the admin token (from
// --admin-token-file) in Authorization: Bearer admits a watcher of any
// group; a wrong one is refused 401; it does not admit a member on /ws.
func TestAdminTokenWatches(t *testing.T) {
	t.Parallel()
	adminFile := writeTemp(t, "admin", testAdminToken+"\n")
	p := startAuthProc(t, "--admin-token-file", adminFile)
	mustDial(t, p, "groupName=room-1", bearer(mint(t, "alice", time.Hour, "room-*")))

	// Any group, the one with alice in it and one no token names.
	for _, g := range []string{"room-1", "elsewhere"} {
		w, _, err := dialEvents(t, p, g, bearer(testAdminToken))
		if err != nil {
			t.Fatalf("admin watcher of %s refused: %v", g, err)
		}
		var ev struct {
			Type    string
			ID      string
			Members []struct{ ID string }
		}
		read := func() []byte {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, b, err := w.Read(ctx)
			if err != nil {
				t.Fatalf("admin watcher of %s: %v", g, err)
			}
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatalf("admin watcher of %s: %s (%v)", g, b, err)
			}
			return b
		}
		if b := read(); ev.Type != "snapshot" {
			t.Fatalf("admin watcher of %s: first event %s", g, b)
		}
		// alice is in room-1: in the snapshot, or (if her join was not
		// complete yet) the next event.
		if g == "room-1" && (len(ev.Members) != 1 || ev.Members[0].ID != "alice") {
			if b := read(); ev.Type != "join" || ev.ID != "alice" {
				t.Fatalf("admin watcher of room-1: no alice: %s", b)
			}
		}
	}

	// A wrong admin token is a bad JWT: 401 with the challenge.
	_, resp, err := dialEvents(t, p, "room-1", bearer(testAdminToken+"x"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("a wrong admin token: %v %v", resp, err)
	}
	// The admin token is no member's token: /ws refuses it.
	for _, q := range []string{"groupName=room-1&id=admin", "groupName=room-1"} {
		if r := handshake(t, p, q, "Authorization", "Bearer "+testAdminToken); r.status != http.StatusUnauthorized {
			t.Fatalf("/ws?%s with the admin token: %d %s", q, r.status, r.body)
		}
	}
	// Only in the header: as ?token= it is taken for a JWT.
	_, resp, err = dialEvents(t, p, "room-1&token="+testAdminToken, &websocket.DialOptions{})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the admin token as ?token=: %v %v", resp, err)
	}
	checkLogsClean(t, p, testAdminToken)
	_ = os.Remove(adminFile)
}
