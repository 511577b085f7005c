package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// chat prints who sent what, text as it is (the old CLI Go-quoted it) with
// terminal escapes defused, and binary as a note; piped stdin ending does
// not end it; 4001 ends it with exit 4 and the reason.
func TestChat(t *testing.T) {
	p := proxytest.Start(t)
	ar, aw := io.Pipe()
	defer aw.Close()
	alice := start(t, p, ar, nil, "chat", "--group", "c", "--id", "alice")
	bob := start(t, p, strings.NewReader(""), nil, "chat", "--group", "c", "--id", "bob") // stdin ends at once
	p.WaitMember(t, "c", "alice")
	p.WaitMember(t, "c", "bob")
	raw := dialRaw(t, p, "raw", "c")

	if _, err := io.WriteString(aw, "hi there, \"bob\"\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to print alice's line", func() bool { return strings.Contains(bob.stdout.String(), "alice: hi there, \"bob\"\n") })
	// What alice sent on the wire is a chat envelope from alice.
	m, err := raw.Next(ctxBG(t))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Bytes(1000)
	env, err := client.ParseEnvelope(b)
	if err != nil || env.Type != "chat" || env.From != "alice" || string(env.Data) != `"hi there, \"bob\""` {
		t.Fatalf("on the wire: %s (%v)", b, err)
	}

	_ = raw.Send(ctxBG(t), client.Text, []byte("plain \"quoted\" é\x1b[31m"))
	_ = raw.Send(ctxBG(t), client.Binary, []byte{0, 1, 2})
	waitFor(t, "bob to print the plain text and the binary note", func() bool {
		o := bob.stdout.String()
		return strings.Contains(o, "plain \"quoted\" é\uFFFD[31m\n") && strings.Contains(o, "[binary message, 3 B]")
	})
	if strings.Contains(bob.stdout.String(), "\x1b") {
		t.Fatal("an escape sequence reached the terminal")
	}

	// Another connection as bob: 4001, exit 4, the reason shown.
	_ = dialRaw(t, p, "bob", "c")
	if code := bob.wait(t); code != exitClosed || !strings.Contains(bob.stderr.String(), "4001 replaced") {
		t.Fatalf("bob: exit %d, stderr:\n%s", code, bob.stderr.String())
	}
	select {
	case <-alice.code:
		t.Fatal("alice ended")
	default:
	}
}

// After 1001 (the proxy restarted) chat says so and reconnects by the
// shared policy (the old CLI never reconnected).
func TestChatReconnectsAfter1001(t *testing.T) {
	p := proxytest.Start(t)
	ar, aw := io.Pipe()
	defer aw.Close()
	bob := start(t, p, ar, nil, "chat", "--group", "r", "--id", "bob")
	p.WaitMember(t, "r", "bob")
	p.Restart()
	waitFor(t, "the reconnect notice", func() bool {
		return strings.Contains(bob.stderr.String(), "1001 going away; reconnecting in")
	})
	p.WaitMember(t, "r", "bob")
	raw := dialRaw(t, p, "raw", "r")
	_ = raw.Send(ctxBG(t), client.Text, []byte(`{"type":"chat","from":"raw","data":"after"}`))
	waitFor(t, "a message after the reconnect", func() bool { return strings.Contains(bob.stdout.String(), "raw: after") })
}

// A refusal shows the proxy's own reason (the old CLI showed the library's
// "expected handshake response status code 101 but got 400").
func TestRefusalShowsReason(t *testing.T) {
	p := proxytest.Start(t)
	for _, cmd := range []string{"chat", "pipe", "receive", "send"} {
		args := []string{cmd, "--group", "g", "--id", "not valid!"}
		if cmd == "send" {
			args = append(args, writeTemp(t, t.TempDir(), "f", []byte("x")))
		}
		pr := start(t, p, nil, nil, args...)
		if code := pr.wait(t); code != exitRefused {
			t.Fatalf("%s: exit %d: %s", cmd, code, pr.stderr.String())
		}
		if e := pr.stderr.String(); !strings.Contains(e, "400 Bad Request: parameter id must be") || strings.Contains(e, "expected handshake") {
			t.Fatalf("%s: %s", cmd, e)
		}
	}
}

// chat in a real terminal (tmux): typed lines go out, received ones show,
// Ctrl-D leaves.
func TestChatInTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no tmux, and CI=true needs this test (.ci/run installs it)")
		}
		t.Skip("no tmux")
	}
	bin := buildCLI(t)
	p := proxytest.Start(t)
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tm := func(args ...string) string {
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v %s", args, err, out)
		}
		return string(out)
	}
	tm("new-session", "-d", "-x", "150", "-y", "30", "-s", "chat",
		"env", "WSPROXY_URL="+p.URL, bin, "chat", "--group", "tmux", "--id", "alice")
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", sock, "kill-server").Run() })
	p.WaitMember(t, "tmux", "alice")
	raw := dialRaw(t, p, "bob", "tmux")

	tm("send-keys", "-t", "chat", "hello from tmux", "Enter")
	m, err := raw.Next(ctxBG(t))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Bytes(1000)
	var env client.Envelope
	if json.Unmarshal(b, &env) != nil || env.From != "alice" || string(env.Data) != `"hello from tmux"` {
		t.Fatalf("got %s", b)
	}
	_ = raw.Send(ctxBG(t), client.Text, []byte(`{"type":"chat","id":"1","from":"bob","data":"hi alice"}`))
	waitFor(t, "the pane to show bob's line", func() bool {
		return strings.Contains(tm("capture-pane", "-p", "-t", "chat"), "bob: hi alice")
	})
	tm("send-keys", "-t", "chat", "C-d")
	p.WaitGone(t, "tmux", "alice")
}

// buildCLI builds the command (without the race detector) once per test run.
func buildCLI(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WSPROXY_CLI_TEST_BIN_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	bin := filepath.Join(dir, "wsproxy-cli")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
