package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// TestBrowserFilesWithCLI: the page and wsproxy-cli exchange files in the
// shared convention (docs/protocol.md section 13): a file the CLI sends
// shows in the page under its name and type, verified, and downloads byte
// for byte; a file the page sends is saved by "wsproxy-cli receive" under
// its name, verified.
func TestBrowserFilesWithCLI(t *testing.T) {
	t.Parallel()
	const token = "browser-cli-token"
	cli := filepath.Join(t.TempDir(), "wsproxy-cli")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", cli, "../wsproxy-cli").CombinedOutput(); err != nil {
		t.Fatalf("go build wsproxy-cli: %v\n%s", err, out)
	}
	p := startProc(t, "--admin-token", token)
	browserCtx := startBrowser(t)
	pat := openPage(t, browserCtx, "pat")
	pat.do(
		chromedp.Navigate(p.base+"/?group=files&id=pat"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
	)
	pat.waitJS("connected", jsConnected)
	waitMembers(t, p, token, "files", "pat")
	env := append(os.Environ(), "WSPROXY_URL="+p.ws(), "WSPROXY_GROUP=files")

	// CLI to page.
	content := make([]byte, 1<<20+77)
	_, _ = rand.Read(content)
	src := filepath.Join(t.TempDir(), "photo.png")
	if err := os.WriteFile(src, content, 0o600); err != nil {
		t.Fatal(err)
	}
	send := exec.Command(cli, "send", "--id", "cli", src)
	send.Env = env
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("wsproxy-cli send: %v\n%s", err, out)
	}
	pat.waitJS("the CLI's file", `document.querySelector('#log li[data-file="ok"] a') !== null`)
	link := eval[struct{ Name, Size, Type, Meta string }](pat, `(() => {
		const li = document.querySelector('#log li[data-file="ok"]'), a = li.querySelector("a");
		return {name: a.download, size: a.dataset.size, type: a.dataset.type, meta: li.firstElementChild.textContent};
	})()`)
	if link.Name != "photo.png" || link.Size != "1048653" || link.Type != "image/png" ||
		!strings.Contains(link.Meta, "from cli") || !strings.Contains(link.Meta, "SHA-256 verified") {
		t.Fatalf("the page shows %+v", link)
	}
	downloads := t.TempDir()
	if _, err := chromedp.CallBrowser(pat.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatal(err)
	}
	pat.do(chromedp.Click(chromedp.CSS(`#log li[data-file="ok"] a`)))
	saved := filepath.Join(downloads, "photo.png")
	waitFor(t, 20*time.Second, "the download", func() bool {
		fi, err := os.Stat(saved)
		return err == nil && fi.Size() == int64(len(content))
	})
	if got, _ := os.ReadFile(saved); !bytes.Equal(got, content) {
		t.Fatal("the downloaded file differs from the one the CLI sent")
	}

	// Page to CLI.
	dir := t.TempDir()
	var stderr, stdout bytes.Buffer
	recv := exec.Command(cli, "receive", "--id", "cli2", "--dir", dir, "--count", "1")
	recv.Env, recv.Stderr, recv.Stdout = env, &stderr, &stdout
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- recv.Wait() }()
	t.Cleanup(func() {
		_ = recv.Process.Kill()
		<-done
	})
	waitMembers(t, p, token, "files", "cli2")
	page := []byte("a report, from the page\n\x00\xff")
	up := filepath.Join(t.TempDir(), "report.txt")
	if err := os.WriteFile(up, page, 0o600); err != nil {
		t.Fatal(err)
	}
	pat.do(
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{up}),
		chromedp.Click(chromedp.ID("send-file")),
	)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("wsproxy-cli receive: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("wsproxy-cli receive got nothing")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "report.txt")); !bytes.Equal(got, page) {
		t.Fatalf("saved %q", got)
	}
	if e := stderr.String(); !strings.Contains(e, "from pat") || !strings.Contains(e, "SHA-256 verified") || !strings.Contains(e, "text/plain") {
		t.Fatalf("receive said:\n%s", e)
	}
}
