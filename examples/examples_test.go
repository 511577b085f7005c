// Package examples_test runs the Python and Node examples against a real
// proxy when their runtimes and libraries are installed (skipped otherwise).
package examples_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// chatExample runs cmd (which joins as id, sends one chat line, prints one
// message, and exits) against a proxy with a Go peer that answers.
func chatExample(t *testing.T, id string, cmd func(url string) *exec.Cmd) {
	p := proxytest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	peer, err := client.Dial(ctx, client.Config{URL: p.URL, ID: "peer", Group: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	p.WaitMember(t, "demo", "peer")

	c := cmd(p.URL)
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	defer func() {
		_ = c.Process.Kill()
		<-done
	}()

	m, err := peer.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Bytes(1000)
	e, err := client.ParseEnvelope(b)
	if err != nil || e.Type != "chat" || e.From != id || string(e.Data) != `"hello from `+id+`"` {
		t.Fatalf("the example sent %s", b)
	}
	if err := peer.Send(ctx, client.Text, []byte(`{"type":"chat","from":"peer","data":"hi `+id+`"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil || strings.TrimSpace(out.String()) != "peer: hi "+id {
			t.Fatalf("the example: %v, printed %q", err, out.String())
		}
	case <-ctx.Done():
		t.Fatalf("the example did not finish; printed %q", out.String())
	}
}

// missing skips the test, except under CI=true, where a missing tool fails
// it: CI installs them (.ci/run), and a check that silently did not run is
// not a pass.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI installs it: .ci/run)", what)
	}
	t.Skip(what)
}

// pythonWithWebsockets is the first python3 that can import websockets: the
// one on PATH, else the system's (Debian's python3-websockets).
func pythonWithWebsockets() string {
	var candidates []string
	if py, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, py)
	}
	for _, py := range append(candidates, "/usr/bin/python3") {
		if exec.Command(py, "-c", "import websockets").Run() == nil {
			return py
		}
	}
	return ""
}

func TestPythonExample(t *testing.T) {
	py := pythonWithWebsockets()
	if py == "" {
		missing(t, "python3 with websockets is not installed (pip install websockets, or apt-get install python3-websockets)")
	}
	chatExample(t, "python", func(url string) *exec.Cmd {
		return exec.Command(py, "python/chat.py", url, "demo", "python", "hello from python", "1")
	})
}

// nodeWithWS returns node and the NODE_PATH under which it finds ws: the
// example's own node_modules (npm install), else Debian's node-ws.
func nodeWithWS() (node, nodePath string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", ""
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "ws")); err == nil {
		return node, ""
	}
	c := exec.Command(node, "-e", "require('ws')")
	c.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	if c.Run() == nil {
		return node, "/usr/share/nodejs"
	}
	return "", ""
}

func TestNodeExample(t *testing.T) {
	node, nodePath := nodeWithWS()
	if node == "" {
		missing(t, "node with ws is not installed (cd examples/node && npm install, or apt-get install node-ws)")
	}
	chatExample(t, "node", func(url string) *exec.Cmd {
		c := exec.Command(node, "node/chat.js", url, "demo", "node", "hello from node", "1")
		if nodePath != "" {
			c.Env = append(os.Environ(), "NODE_PATH="+nodePath)
		}
		return c
	})
}
