package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "TestBrowser writes docs/page.png from a page with real traffic")

// chromiumPath finds the browser. Without one the test is skipped, except in
// CI (CI=true), where it fails: CI must run it.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found, and CI=true needs the browser test: apt-get install -y chromium")
	}
	t.Skip("no Chromium found; to run the browser test: apt-get install chromium")
	return ""
}

// startBrowser starts headless Chromium; it stops when the test ends.
func startBrowser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(1100, 800),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses root with its sandbox
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// page is one browser tab on the proxy's page.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu       sync.Mutex
	problems []string // console errors and uncaught exceptions
	expected []string // console errors containing one of these are expected
}

// expect marks console errors containing s as expected.
func (pg *page) expect(s string) {
	pg.mu.Lock()
	pg.expected = append(pg.expected, s)
	pg.mu.Unlock()
}

func openPage(t *testing.T, browserCtx context.Context, name string) *page {
	ctx, cancel := chromedp.NewContext(browserCtx)
	pg := &page{t: t, name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open tab: %v", name, err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				pg.mu.Lock()
				if !slices.ContainsFunc(pg.expected, func(s string) bool { return strings.Contains(m.Text, s) }) {
					pg.problems = append(pg.problems, m.String())
				}
				pg.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		pg.mu.Lock()
		defer pg.mu.Unlock()
		for _, p := range pg.problems {
			t.Errorf("%s: browser console: %s", name, p)
		}
	})
	return pg
}

// do runs steps in the tab, each call bounded to 20 s.
func (pg *page) do(steps ...chromedp.Action[chromedp.Void]) {
	pg.t.Helper()
	ctx, cancel := context.WithTimeout(pg.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		pg.t.Fatalf("%s: %v", pg.name, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) in the tab.
func eval[T any](pg *page, js string) T {
	pg.t.Helper()
	ctx, cancel := context.WithTimeout(pg.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		pg.t.Fatalf("%s: evaluate %s: %v", pg.name, js, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is truthy in the tab.
func (pg *page) waitJS(what, js string) {
	pg.t.Helper()
	ctx, cancel := context.WithTimeout(pg.ctx, 20*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		pg.t.Fatalf("%s: waiting for %s: %v\nstatus: %s", pg.name, what, err, pg.statusText())
	}
}

func (pg *page) statusText() string {
	ctx, cancel := context.WithTimeout(pg.ctx, 2*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.getElementById("state").textContent + " | " + document.getElementById("status").textContent`))
	return s
}

const (
	jsConnected = `document.getElementById("state").dataset.state === "connected"`
	jsClosed    = `document.getElementById("state").dataset.state === "closed"`
)

func (pg *page) sendText(s string) {
	pg.t.Helper()
	b, _ := json.Marshal(s)
	pg.do(
		chromedp.Evaluate[chromedp.Void](`document.getElementById("text").value = `+string(b)),
		chromedp.Click(chromedp.ID("send")),
	)
}

// texts is the text of every received text message shown in the tab.
func (pg *page) texts() []string {
	pg.t.Helper()
	return eval[[]string](pg, `Array.from(document.querySelectorAll('#log li[data-kind="in-text"] .body'), (e) => e.textContent)`)
}

// members is the ids in group, from the admin API.
func members(t *testing.T, p *proc, token, group string) map[string]time.Time {
	t.Helper()
	status, body := p.api(t, "GET", "/api/groups/"+url.PathEscape(group), token, "", nil)
	ids := map[string]time.Time{}
	if status == 404 {
		return ids
	}
	var g struct {
		Members []struct {
			ID             string
			ConnectedSince time.Time `json:"connected_since"`
		}
	}
	if status != 200 || json.Unmarshal(body, &g) != nil {
		t.Fatalf("GET group: %d %s", status, body)
	}
	for _, m := range g.Members {
		ids[m.ID] = m.ConnectedSince
	}
	return ids
}

func waitMembers(t *testing.T, p *proc, token, group string, ids ...string) {
	t.Helper()
	waitFor(t, 10*time.Second, strings.Join(ids, ", ")+" in "+group, func() bool {
		have := members(t, p, token, group)
		for _, id := range ids {
			if _, ok := have[id]; !ok {
				return false
			}
		}
		return true
	})
}

// TestBrowser drives the page at / in headless Chromium: two pages in one
// group exchange text and a file, a page in another group gets none of it, a
// page part-way through an abandoned message reconnects at once, and pages
// kicked or replaced say why and stay closed.
func TestBrowser(t *testing.T) {
	t.Parallel()
	start := time.Now()
	const token = "browser-test-token"
	const room = "salle café/ü 1"
	p := startProc(t, "--admin-token", token, "--buffer-bytes", "64KiB")
	// Started second, so stopped first: Chromium's idle pre-connected
	// sockets would otherwise hold the proxy's shutdown for 5 s.
	browserCtx := startBrowser(t)

	alice := openPage(t, browserCtx, "alice")
	bob := openPage(t, browserCtx, "bob")
	carol := openPage(t, browserCtx, "carol")

	// alice and bob join through the page's URL parameters; carol types.
	for _, pg := range []*page{alice, bob} {
		pg.do(
			chromedp.Navigate(p.base+"/?group="+url.QueryEscape(room)+"&id="+pg.name),
			chromedp.WaitVisible(chromedp.ID("connect")),
			chromedp.Click(chromedp.ID("connect")),
		)
		pg.waitJS("connected", jsConnected)
	}
	carol.do(
		chromedp.Navigate(p.base+"/"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.SetValue(chromedp.ID("group"), "other"),
		chromedp.SetValue(chromedp.ID("id"), "carol"),
		chromedp.Click(chromedp.ID("connect")),
	)
	carol.waitJS("connected", jsConnected)
	// A Go client in the same group checks types and bytes exactly.
	gopher := dial(t, p.addr(), "gopher", room)
	waitMembers(t, p, token, room, "alice", "bob", "gopher")
	waitMembers(t, p, token, "other", "carol")

	// Text, including markup that must stay text.
	hello := "Hi Bob! Sending you the report now 📎"
	markup := `<b>not bold</b> & "quotes" <script>alert(1)</script> — héllo`
	alice.sendText(hello)
	alice.sendText(markup)
	bob.waitJS("2 texts", `document.querySelectorAll('#log li[data-kind="in-text"]').length === 2`)
	if got := bob.texts(); len(got) != 2 || got[0] != hello || got[1] != markup {
		t.Fatalf("bob shows %q", got)
	}
	if eval[bool](bob, `document.querySelector("#log b, #log script") !== null`) {
		t.Fatal("received text was rendered as HTML")
	}
	for _, want := range []string{hello, markup} {
		if typ, got := receive(t, gopher); typ != websocket.MessageText || string(got) != want {
			t.Fatalf("gopher got %v %q, want text %q", typ, got, want)
		}
	}

	// A file of a few MiB (relayed as a stream: --buffer-bytes is 64KiB).
	content := make([]byte, 3<<20+123)
	_, _ = rand.Read(content)
	path := filepath.Join(t.TempDir(), "report.bin")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	alice.do(
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{path}),
		chromedp.Click(chromedp.ID("send-file")),
	)
	alice.waitJS("the file sent", `document.querySelector('#log li[data-kind="out-binary"]')?.dataset.done === "sent"`)
	if typ, got := receive(t, gopher); typ != websocket.MessageBinary || !bytes.Equal(got, content) {
		t.Fatalf("gopher got %v message of %d bytes, want the file's %d bytes", typ, len(got), len(content))
	}
	// bob downloads it through the page's link: byte for byte the file.
	bob.waitJS("the file", `document.querySelector('#log li[data-kind="in-binary"] a') !== null`)
	link := eval[struct{ Name, Size string }](bob,
		`(() => { const a = document.querySelector('#log li[data-kind="in-binary"] a'); return {name: a.download, size: a.dataset.size}; })()`)
	if link.Size != "3145851" {
		t.Fatalf("bob's page says the file has %s bytes, want 3145851", link.Size)
	}
	downloads := t.TempDir()
	if _, err := chromedp.CallBrowser(bob.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatal(err)
	}
	bob.do(chromedp.Click(chromedp.CSS(`#log li[data-kind="in-binary"] a`)))
	saved := filepath.Join(downloads, link.Name)
	waitFor(t, 10*time.Second, "the download", func() bool {
		fi, err := os.Stat(saved)
		return err == nil && fi.Size() == int64(len(content))
	})
	if got, _ := os.ReadFile(saved); !bytes.Equal(got, content) {
		t.Fatal("the downloaded file differs from the one sent")
	}

	// bob answers; alice gets it.
	reply := "Got it, thanks! 🙌"
	bob.sendText(reply)
	alice.waitJS("the reply", `document.querySelectorAll('#log li[data-kind="in-text"]').length === 1`)
	if got := alice.texts(); got[0] != reply {
		t.Fatalf("alice shows %q", got)
	}
	receive(t, gopher)

	// carol, in another group, got none of it: the first and only message
	// she sees is one sent to her group after all of the above.
	if st, body := p.api(t, "POST", "/api/groups/other/messages", token, "text/plain", strings.NewReader("only for other")); st != 202 {
		t.Fatalf("publish: %d %s", st, body)
	}
	carol.waitJS("the message for other", `document.querySelectorAll('#log li.in').length > 0`)
	if got := eval[int](carol, `document.querySelectorAll('#log li.in').length`); got != 1 || carol.texts()[0] != "only for other" {
		t.Fatalf("carol received %d messages: %q", got, carol.texts())
	}

	// A phone-sized screen: nothing wider than the screen.
	carol.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	if w := eval[int](carol, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("on a 390 px wide screen the page is %d px wide", w)
	}

	if *updateScreenshot {
		bob.do(chromedp.EmulateViewport(1280, 900))
		png, err := chromedp.Run(bob.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// bob is kicked: the page says so and does not reconnect.
	if st, _ := p.api(t, "DELETE", "/api/groups/"+url.PathEscape(room)+"/members/bob", token, "", nil); st != 204 {
		t.Fatalf("kick: %d", st)
	}
	bob.waitJS("closed", jsClosed)
	status := eval[string](bob, `document.getElementById("status").textContent`)
	for _, want := range []string{"4003 kicked", "administrator", "Not reconnecting"} {
		if !strings.Contains(status, want) {
			t.Errorf("bob's status %q lacks %q", status, want)
		}
	}

	// A message alice is part-way through is abandoned by its sender: she is
	// closed with 4002 and reconnects at once.
	before := members(t, p, token, room)["alice"]
	abandonMessage(t, p, token, room, gopher)
	alice.waitJS("4002 in the log", `Array.from(document.querySelectorAll('#log li[data-kind="sys"]')).some((e) => e.textContent.includes("4002 sender aborted"))`)
	alice.waitJS("connected again", jsConnected)
	waitFor(t, 10*time.Second, "alice back in the group", func() bool {
		since, ok := members(t, p, token, room)["alice"]
		return ok && since.After(before)
	})

	// alice is replaced by a connection with her id: the page says so and
	// does not reconnect (which would replace the newcomer in turn).
	dial(t, p.addr(), "alice", room)
	alice.waitJS("closed", jsClosed)
	status = eval[string](alice, `document.getElementById("status").textContent`)
	for _, want := range []string{"4001 replaced", "Not reconnecting"} {
		if !strings.Contains(status, want) {
			t.Errorf("alice's status %q lacks %q", status, want)
		}
	}
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// abandonMessage has a Go client start a large message to group and drop its
// connection part-way. It returns once reader (a member of group) has read
// 512 KiB of it: since a stream's ring holds 2 × --buffer-bytes (128 KiB),
// every member has then written some of it, so all of them get 4002.
func abandonMessage(t *testing.T, p *proc, token, group string, reader *websocket.Conn) {
	t.Helper()
	sender := dial(t, p.addr(), "sender", group)
	waitMembers(t, p, token, group, "sender")
	written := make(chan struct{})
	go func() {
		defer close(written)
		w, err := sender.Writer(context.Background(), websocket.MessageBinary)
		if err != nil {
			return
		}
		chunk := make([]byte, 64<<10)
		for range 1024 { // up to 64 MiB; the drop ends it long before
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, r, err := reader.Reader(ctx)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	if _, err := io.CopyN(io.Discard, r, 512<<10); err != nil {
		t.Fatalf("reading the message: %v", err)
	}
	sender.CloseNow()
	<-written
	_, err = io.Copy(io.Discard, r)
	if code := websocket.CloseStatus(err); code != 4002 {
		t.Fatalf("reader closed with %d (%v), want 4002", code, err)
	}
}

// TestBrowserReconnects stops the proxy under a connected page: the page shows
// 1001 and reconnects by itself, after a random delay and with backoff while
// the proxy is down, to the proxy started again on the same address.
func TestBrowserReconnects(t *testing.T) {
	t.Parallel()
	start := time.Now()
	p := startProc(t)
	browserCtx := startBrowser(t)
	pg := openPage(t, browserCtx, "page")
	pg.expect("WebSocket connection to") // refused while the proxy is down
	pg.do(
		chromedp.Navigate(p.base+"/?group=g&id=p1"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
	)
	pg.waitJS("connected", jsConnected)
	waitMembers(t, p, "", "g", "p1")

	go p.stop() // waits for run to return; the page need not
	pg.waitJS("1001 in the log", `Array.from(document.querySelectorAll('#log li[data-kind="sys"]')).some((e) => e.textContent.includes("1001 going away"))`)
	if eval[string](pg, `document.getElementById("state").dataset.state`) == "closed" {
		t.Fatal("the page gave up after 1001")
	}
	addr := strings.TrimPrefix(p.base, "http://")
	waitFor(t, 10*time.Second, "the old proxy to stop listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	again := startProc(t, "--addr", addr)
	pg.waitJS("connected again", jsConnected)
	waitMembers(t, again, "", "g", "p1")
	t.Logf("browser reconnect test took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserToken: with --auth=jwt the page sends its token as the
// subprotocol pair, taken from the URL fragment (which it then drops from
// the address bar) or typed into its field; the token's subject fills in the
// id. A page without a token gets no connection; one whose token expires
// shows 4005 and does not reconnect.
func TestBrowserToken(t *testing.T) {
	t.Parallel()
	const admin = "browser-admin"
	p := startAuthProc(t, "--admin-token", admin)
	browserCtx := startBrowser(t)
	tokAlice := mint(t, "alice", time.Hour, "room-*")
	tokBob := mint(t, "bob", time.Hour, "room-1")

	alice := openPage(t, browserCtx, "alice")
	alice.do(
		chromedp.Navigate(p.base+"/?group=room-1#token="+tokAlice),
		chromedp.WaitVisible(chromedp.ID("connect")),
	)
	if id := eval[string](alice, `document.getElementById("id").value`); id != "alice" {
		t.Errorf("id field %q, want the token's subject alice", id)
	}
	if h := eval[string](alice, `location.hash`); h != "" {
		t.Errorf("the token stays in the address bar: %q", h)
	}
	alice.do(chromedp.Click(chromedp.ID("connect")))
	alice.waitJS("connected", jsConnected)

	bob := openPage(t, browserCtx, "bob")
	b, _ := json.Marshal(tokBob)
	bob.do(
		chromedp.Navigate(p.base+"/?group=room-1"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.getElementById("token"); f.value = `+string(b)+`; f.dispatchEvent(new Event("input")); })()`),
		chromedp.Click(chromedp.ID("connect")),
	)
	bob.waitJS("connected", jsConnected)
	waitMembers(t, p, admin, "room-1", "alice", "bob")
	gopher := mustDial(t, p, "groupName=room-1", bearer(mint(t, "gopher", time.Hour, "room-1")))
	waitMembers(t, p, admin, "room-1", "gopher")

	alice.sendText("hello with a token")
	bob.waitJS("alice's text", `document.querySelectorAll('#log li[data-kind="in-text"]').length === 1`)
	if got := bob.texts(); got[0] != "hello with a token" {
		t.Errorf("bob shows %q", got)
	}
	if _, got := receive(t, gopher); string(got) != "hello with a token" {
		t.Errorf("gopher got %q", got)
	}

	// Without a token: refused (the browser sees only a failed connection).
	anon := openPage(t, browserCtx, "anonymous")
	anon.expect("WebSocket connection to")
	anon.do(
		chromedp.Navigate(p.base+"/?group=room-1&id=anon"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
	)
	anon.waitJS("a refused connection", `Array.from(document.querySelectorAll('#log li[data-kind="sys"]')).some((e) => e.textContent.includes("1006"))`)
	if _, ok := members(t, p, admin, "room-1")["anon"]; ok {
		t.Error("a page without a token joined")
	}
	anon.do(chromedp.Click(chromedp.ID("connect"))) // stop reconnecting

	// A token that expires: 4005, not reconnecting.
	short := openPage(t, browserCtx, "short")
	short.do(
		chromedp.Navigate(p.base+"/?group=room-1#token="+mint(t, "shorty", 5*time.Second, "room-1")),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
	)
	short.waitJS("closed", jsClosed)
	status := eval[string](short, `document.getElementById("status").textContent`)
	for _, want := range []string{"4005 token expired", "Not reconnecting"} {
		if !strings.Contains(status, want) {
			t.Errorf("status %q lacks %q", status, want)
		}
	}
	// (The proxy keeps running: stopping it under the open pages would make
	// them reconnect to nothing, which the browser reports as errors.)
	if logs := p.logText(); strings.Contains(logs, tokAlice) || strings.Contains(logs, tokBob) || !strings.Contains(logs, `"sub":"shorty"`) {
		t.Error("the log holds a token, or names no sub")
	}
}
