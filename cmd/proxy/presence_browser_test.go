package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// TestBrowserPresence: the page shows who is in its group (from
// /ws/events), and a line in words when someone joins or leaves; the
// page's watcher is not a member in the admin API's listing.
func TestBrowserPresence(t *testing.T) {
	t.Parallel()
	const token = "presence-test-token"
	const room = "standup"
	p := startProc(t, "--admin-token", token)
	browserCtx := startBrowser(t)

	dora := openPage(t, browserCtx, "dora")
	ana := dial(t, p.addr(), "ana", room) // there before dora
	waitMembers(t, p, token, room, "ana")
	dora.do(
		chromedp.Navigate(p.base+"/?group="+url.QueryEscape(room)+"&id=dora"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
	)
	dora.waitJS("connected", jsConnected)
	const jsMembers = `Array.from(document.querySelectorAll("#members li"), (e) => e.textContent).join(",")`
	dora.waitJS("the snapshot", jsMembers+` === "ana,dora (you)"`)

	lines := func() []string {
		return eval[[]string](dora, `Array.from(document.querySelectorAll('#log li[data-kind="presence"] .body'), (e) => e.textContent)`)
	}
	waitLine := func(want string) {
		t.Helper()
		dora.waitJS(want, `Array.from(document.querySelectorAll('#log li[data-kind="presence"] .body')).some((e) => e.textContent === `+jsString(want)+`)`)
	}

	eve := dial(t, p.addr(), "eve", room)
	waitLine("eve joined")
	dora.waitJS("eve listed", jsMembers+` === "ana,dora (you),eve"`)

	// The watcher is not a member: the admin API lists the three members.
	if got := members(t, p, token, room); len(got) != 3 {
		t.Fatalf("admin API lists %d members: %v", len(got), got)
	}

	if st, _ := p.api(t, "DELETE", "/api/groups/"+room+"/members/eve", token, "", nil); st != 204 {
		t.Fatalf("kick: %d", st)
	}
	waitLine("eve was kicked by an administrator")
	_ = eve
	dial(t, p.addr(), "ana", room) // replaces ana: not a leave
	waitLine("ana reconnected")
	fred := dial(t, p.addr(), "fred", room)
	waitLine("fred joined")
	fred.Close(websocket.StatusNormalClosure, "")
	waitLine("fred left")
	dora.waitJS("members after all that", jsMembers+` === "ana,dora (you)"`)
	if got := lines(); len(got) != 5 {
		t.Errorf("presence lines %q, want 5", got)
	}
	if strings.Contains(strings.Join(lines(), " "), "ana left") {
		t.Error("a replacement showed as a leave")
	}
	_ = ana

	if *updateScreenshot {
		dora.do(chromedp.EmulateViewport(1280, 800))
		png, err := chromedp.Run(dora.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "page-presence.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// TestAuthPresence: with --auth=jwt, /ws/events takes the same tokens as
// /ws: none is 401, one for another group 403, one for the group is let in,
// and the watcher is closed with 4005 when its token expires.
func TestAuthPresence(t *testing.T) {
	t.Parallel()
	p := startAuthProc(t)
	watchURL := p.ws() + "/events?groupName=room"
	dialEvents := func(opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
		if opts == nil {
			opts = &websocket.DialOptions{}
		}
		opts.HTTPClient = httpClient
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return websocket.Dial(ctx, watchURL, opts)
	}
	if _, resp, err := dialEvents(nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
	if _, resp, err := dialEvents(bearer(mint(t, "w", time.Minute, "other"))); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a token for another group: %v", err)
	}
	w, _, err := dialEvents(bearer(mint(t, "w", 3*time.Second, "room")))
	if err != nil {
		t.Fatalf("a token for the group: %v", err)
	}
	defer w.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, b, err := w.Read(ctx); err != nil || !strings.Contains(string(b), `"type":"snapshot"`) {
		t.Fatalf("first event %q, %v", b, err)
	}
	_, _, err = w.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4005 {
		t.Fatalf("at the token's expiry: %v, want 4005", err)
	}
}
