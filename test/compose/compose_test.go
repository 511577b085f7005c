//go:build compose

package compose_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestComposeStack runs docker-compose.yml as a user would and checks, from
// outside the container only:
//   - the container turns healthy through its own health check;
//   - a text and a binary message cross between two clients on the published
//     port, exact in type and bytes, and nothing comes back to its sender;
//   - stopping the stack closes both clients with 1001 and the proxy exits 0
//     (not killed after stop_grace_period).
func TestComposeStack(t *testing.T) {
	st := newStack(t)
	st.compose(t, 2*time.Minute, "up", "--detach", "--no-build")
	cid := strings.TrimSpace(st.compose(t, 30*time.Second, "ps", "-q", "proxy"))
	if cid == "" {
		t.Fatal("compose ps: no proxy container")
	}
	waitHealthy(t, cid, time.Minute)

	// "127.0.0.1:49153": Docker picked the host port (WSPROXY_PORT=0).
	addr := strings.TrimSpace(st.compose(t, 30*time.Second, "port", "proxy", "8080"))
	t.Logf("container %.12s healthy, published on %s", cid, addr)

	const group = "compose-smoke"
	alice := dial(t, addr, "alice", group)
	bob := dial(t, addr, "bob", group)
	// A message reaches the members connected when it starts; the connection
	// gauge counts a client only once it has joined its group.
	waitConnections(t, addr, 2)

	text := "hello from alice: héllo ✓ 👋"
	alice.send(t, websocket.MessageText, []byte(text))
	bob.expect(t, websocket.MessageText, []byte(text))

	// Every byte value, and larger than --buffer-bytes (1 MiB), so that it
	// is relayed through the streaming path.
	blob := make([]byte, 2<<20+3)
	for i := range 256 {
		blob[i] = byte(i)
	}
	rand.NewChaCha8([32]byte{'w', 's'}).Read(blob[256:])
	bob.send(t, websocket.MessageBinary, blob)
	alice.expect(t, websocket.MessageBinary, blob)

	// Stop as `docker-compose stop` does: SIGTERM, SIGKILL after stop_grace_period.
	start := time.Now()
	st.compose(t, time.Minute, "stop")
	t.Logf("stack stopped in %v", time.Since(start).Round(time.Millisecond))

	for _, c := range []*client{alice, bob} {
		c.expectClosed(t, websocket.StatusGoingAway, "going away")
	}
	state := strings.TrimSpace(docker(t, 30*time.Second, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid))
	if state != "exited 0" {
		t.Errorf("container state after stop: %q, want \"exited 0\"", state)
	}
}

// stack is one docker-compose project made from the repository's compose file.
type stack struct {
	command []string // "docker-compose" or "docker compose"
	file    string
	project string
	env     []string
}

// newStack prepares a project; when the test ends the project is taken down
// (containers and network), its logs shown first if the test failed.
func newStack(t *testing.T) *stack {
	t.Helper()
	file, err := filepath.Abs("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{
		command: strings.Fields(os.Getenv("COMPOSE")),
		file:    file,
		project: os.Getenv("WSPROXY_COMPOSE_PROJECT"),
		env: append(os.Environ(),
			"WSPROXY_HOST_IP=127.0.0.1",
			"WSPROXY_PORT=0", // any free port
			"WSPROXY_HEALTHCHECK_INTERVAL=1s",
		),
	}
	if len(st.command) == 0 {
		st.command = []string{"docker-compose"}
	}
	if st.project == "" {
		st.project = fmt.Sprintf("wsproxy-test-%d-%d", rand.IntN(1e6), os.Getpid())
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := st.run(30*time.Second, "logs", "--no-color"); err == nil {
				t.Logf("proxy logs:\n%s", out)
			}
		}
		if out, err := st.run(time.Minute, "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return st
}

// compose runs a compose subcommand on the project and returns its stdout;
// it fails the test if the command fails or takes longer than timeout.
func (st *stack) compose(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := st.run(timeout, args...)
	if err != nil {
		t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (st *stack) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append([]string{"--file", st.file, "--project-name", st.project}, args...)
	cmd := exec.CommandContext(ctx, st.command[0], append(st.command[1:], args...)...)
	cmd.Env = st.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func docker(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).Output()
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// waitHealthy waits for the container's health check to pass; it fails at
// once if the container turns unhealthy or stops.
func waitHealthy(t *testing.T, cid string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		state := strings.TrimSpace(docker(t, 10*time.Second, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", cid))
		switch state {
		case "running healthy":
			return
		case "running starting":
		default:
			t.Fatalf("container state %q while waiting for healthy", state)
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not healthy after %v (state %q)", timeout, state)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitConnections waits until the proxy's wsproxy_connections gauge is n.
func waitConnections(t *testing.T, addr string, n int) {
	t.Helper()
	want := fmt.Sprintf("wsproxy_connections %d", n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		found := false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == want {
				found = true
			}
		}
		resp.Body.Close()
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %q", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is a real WebSocket client whose reader runs from dial until the
// connection ends.
type client struct {
	name string
	conn *websocket.Conn
	msgs chan message // every message received, in order; closed when the reader ends
	end  error        // why the reader ended; set before msgs is closed
}

type message struct {
	typ  websocket.MessageType
	data []byte
}

func dial(t *testing.T, addr, id, group string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws://" + addr + "/ws?id=" + id + "&groupName=" + group
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	conn.SetReadLimit(-1)
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{name: id, conn: conn, msgs: make(chan message, 16)}
	go c.read()
	return c
}

func (c *client) read() {
	defer close(c.msgs)
	for {
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.end = err
			return
		}
		c.msgs <- message{typ, data}
	}
}

func (c *client) send(t *testing.T, typ websocket.MessageType, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, typ, data); err != nil {
		t.Fatalf("%s: write: %v", c.name, err)
	}
}

// expect waits for the next message and checks its type and bytes.
func (c *client) expect(t *testing.T, typ websocket.MessageType, data []byte) {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			t.Fatalf("%s: connection ended waiting for a %v message: %v", c.name, typ, c.end)
		}
		if m.typ != typ || !bytes.Equal(m.data, data) {
			t.Fatalf("%s: got %v message of %d bytes, want %v of %d bytes (same bytes)", c.name, m.typ, len(m.data), typ, len(data))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no %v message within 10s", c.name, typ)
	}
}

// expectClosed waits for the connection to end and checks the close code
// and reason; any message still unread was one too many (an echo).
func (c *client) expectClosed(t *testing.T, code websocket.StatusCode, reason string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-c.msgs:
			if ok {
				t.Errorf("%s: unexpected %v message of %d bytes", c.name, m.typ, len(m.data))
				continue
			}
			var ce websocket.CloseError
			if !errors.As(c.end, &ce) || ce.Code != code || ce.Reason != reason {
				t.Errorf("%s: connection ended with %v, want close %d %q", c.name, c.end, code, reason)
			}
			return
		case <-timeout:
			t.Errorf("%s: not closed within 10s of the stack stopping", c.name)
			return
		}
	}
}
