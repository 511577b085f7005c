package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// rect is an element's box in the viewport (getBoundingClientRect).
type rect struct{ Top, Bottom, Left, Right, Width, Height float64 }

func (r rect) String() string {
	return fmt.Sprintf("[%.0f,%.0f]x[%.0f,%.0f]", r.Left, r.Right, r.Top, r.Bottom)
}

// layout is what TestBrowserLayout measures on the page.
type layout struct {
	VW, VH, ScrollW float64
	Text, Send      rect   // the text box and its button
	Newest          []rect // the newest three messages
	Log             rect   // the message list
	Copy, Group     rect   // "Copy invite link"; the group field (folded away once joined)
	WSURL, Link     string // the WebSocket URL shown for other clients; the invite link
	Body            string // every text on the page
}

const jsLayout = `(() => {
	const box = (e) => { if (!e) return null; const r = e.getBoundingClientRect();
		return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; };
	const $ = (id) => document.getElementById(id);
	return {
		vw: innerWidth, vh: innerHeight, scrollW: document.documentElement.scrollWidth,
		text: box($("text")), send: box($("send")),
		newest: Array.from($("log").children).slice(-3).map(box),
		log: box($("log")), copy: box($("copy-link")), group: box($("group")),
		wsurl: $("ws-url").textContent, link: $("copy-link").dataset.link || "",
		body: document.body.innerText,
	};
})()`

// inView reports whether r is wholly on screen and not empty.
func (l layout) inView(r rect) bool {
	const slack = 0.5
	return r.Width > 0 && r.Height > 0 && r.Top >= -slack && r.Left >= -slack &&
		r.Bottom <= l.VH+slack && r.Right <= l.VW+slack
}

// TestBrowserLayout checks the page's layout rules on a phone (390x844) and a
// desktop (1280x900) with more messages than fit: once joined, the text box,
// its button and the newest messages are on screen together; the join form
// has folded away; nothing is wider than the screen; no text points "on the
// right"; the invite link and the group's ws:// URL for other clients are
// shown, the link is copied to the clipboard and joins the same group.
func TestBrowserLayout(t *testing.T) {
	t.Parallel()
	const room = "salle café/ü 1"
	p := startProc(t)
	browserCtx := startBrowser(t)
	lines := []string{
		"Morning! Is the build green again?",
		"Yes, since the retry fix. The soak ran all night without a failure.",
		"Great. I'll send the report once the numbers are in.",
		"Can you look at the phone layout too? Someone said the text box was off screen once connected, and that the page pointed to a list of messages that was not there.",
		"On it.",
	}
	for _, vp := range []struct {
		name   string
		w, h   int64
		mobile bool
	}{{"phone", 390, 844, true}, {"desktop", 1280, 900, false}} {
		t.Run(vp.name, func(t *testing.T) {
			pg := openPage(t, browserCtx, vp.name)
			opts := []chromedp.EmulateViewportOption{chromedp.EmulatePortrait}
			if vp.mobile {
				opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
			}
			pg.do(
				chromedp.EmulateViewport(vp.w, vp.h, opts...),
				chromedp.Navigate(p.base+"/?group="+url.QueryEscape(room)+"&id="+vp.name),
				chromedp.WaitVisible(chromedp.ID("connect")),
			)
			before := eval[layout](pg, jsLayout)
			if !before.inView(before.Group) || before.Copy.Height != 0 {
				t.Errorf("before joining: group field %v (want on screen), copy link %v (want hidden)", before.Group, before.Copy)
			}
			pg.do(chromedp.Click(chromedp.ID("connect")))
			pg.waitJS("connected", jsConnected)

			// More messages than fit, from a Go client; then one typed here.
			other := dial(t, p.addr(), "other-"+vp.name, room)
			waitMembers(t, p, "", room, vp.name, "other-"+vp.name)
			const n = 40
			for i := range n {
				send(t, other, websocket.MessageText, []byte(lines[i%len(lines)]))
			}
			pg.waitJS(fmt.Sprintf("%d messages", n), fmt.Sprintf(`document.querySelectorAll('#log li[data-kind="in-text"]').length === %d`, n))
			pg.sendText("Thanks, looks right on my phone now.")
			pg.waitJS("the sent text", `document.querySelector('#log li[data-kind="out-text"]') !== null`)
			// The page scrolls to the newest message after it renders it:
			// on a busy machine that can come a moment later.
			pg.waitJS("the list scrolled to its newest message", `(() => {
				const log = document.getElementById('log'), li = log.lastElementChild;
				const a = log.getBoundingClientRect(), b = li.getBoundingClientRect();
				return b.top >= a.top - 0.5 && b.bottom <= a.bottom + 0.5;
			})()`)

			l := eval[layout](pg, jsLayout)
			if l.VW != float64(vp.w) || l.VH != float64(vp.h) {
				t.Fatalf("viewport %vx%v, want %dx%d", l.VW, l.VH, vp.w, vp.h)
			}
			if !l.inView(l.Text) || !l.inView(l.Send) {
				t.Errorf("text box %v or its button %v is not on a %dx%d screen", l.Text, l.Send, vp.w, vp.h)
			}
			if len(l.Newest) != 3 {
				t.Fatalf("%d entries in the log", len(l.Newest))
			}
			for i, r := range l.Newest {
				if !l.inView(r) || r.Top < l.Log.Top-0.5 || r.Bottom > l.Log.Bottom+0.5 {
					t.Errorf("newest message %d (%v) is not on screen inside the list %v (screen %vx%v)", i, r, l.Log, l.VW, l.VH)
				}
			}
			if vp.mobile && l.Text.Top < l.Log.Bottom {
				t.Errorf("on a phone the text box %v is not below the messages %v, as in a chat", l.Text, l.Log)
			}
			if l.ScrollW > l.VW {
				t.Errorf("the page is %v px wide on a %v px screen", l.ScrollW, l.VW)
			}
			if l.Group.Height != 0 || !l.inView(l.Copy) {
				t.Errorf("joined: the group field is %v (want folded away), copy link %v (want on screen)", l.Group, l.Copy)
			}
			if m := regexp.MustCompile(`(?i)\b(on|to) the (right|left)\b|\b(above|below)\b`).FindString(l.Body); m != "" {
				t.Errorf("the page says %q: it cannot know where things are on every screen", m)
			}
			wantWS := "ws://" + p.addr() + "/ws?id=<id>&groupName=" + url.PathEscape(room)
			if l.WSURL != wantWS || !strings.Contains(l.Body, wantWS) {
				t.Errorf("ws:// URL shown %q, want %q", l.WSURL, wantWS)
			}
			wantLink := p.base + "/?group=" + url.PathEscape(room)
			if l.Link != wantLink {
				t.Errorf("invite link %q, want %q", l.Link, wantLink)
			}

			if vp.mobile && *updateScreenshot {
				png, err := chromedp.Run(pg.ctx, chromedp.CaptureScreenshot())
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join("..", "..", "docs", "page-phone.png"), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			// Copy invite link puts the link on the clipboard.
			for _, perm := range []string{"clipboard-read", "clipboard-write"} {
				if _, err := chromedp.CallBrowser(pg.ctx, browser.SetPermission, browser.SetPermissionParams{
					Permission: &browser.PermissionDescriptor{Name: perm}, Setting: "granted", Origin: p.base,
				}); err != nil {
					t.Fatalf("grant %s: %v", perm, err)
				}
			}
			pg.do(chromedp.Click(chromedp.ID("copy-link")))
			pg.waitJS("Link copied", `document.getElementById("copy-link").textContent === "Link copied"`)
			if got := eval[string](pg, `navigator.clipboard.readText()`); got != wantLink {
				t.Errorf("clipboard holds %q, want the invite link %q", got, wantLink)
			}

			// The link opens the page on the same group, with an id of its own.
			guest := openPage(t, browserCtx, "guest-"+vp.name)
			guest.do(
				chromedp.Navigate(wantLink),
				chromedp.WaitVisible(chromedp.ID("connect")),
			)
			if g := eval[string](guest, `document.getElementById("group").value`); g != room {
				t.Errorf("the invite link filled in the group %q, want %q", g, room)
			}
			guestID := eval[string](guest, `document.getElementById("id").value`)
			if guestID == vp.name || guestID == "" {
				t.Errorf("the invite link gave the guest the id %q", guestID)
			}
			guest.do(chromedp.Click(chromedp.ID("connect")))
			guest.waitJS("connected", jsConnected)
			waitMembers(t, p, "", room, vp.name, guestID)
		})
	}
}
