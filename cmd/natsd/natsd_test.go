package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain runs main itself when the test binary is started by one of the
// tests with natsdMainEnv set: that is how the exit codes are checked.
func TestMain(m *testing.M) {
	if os.Getenv(natsdMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	leakcheck.Main(m)
}

const natsdMainEnv = "NATSD_TEST_RUN_MAIN"

// instance is run serving in the background on random loopback ports.
type instance struct {
	client  string // nats://127.0.0.1:port
	monitor string // http://127.0.0.1:port
	stderr  *syncBuffer
	cancel  context.CancelFunc
	done    chan struct{} // closed when run has returned
	err     error         // run's result, set before done is closed
}

func start(t *testing.T, extra ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"-host", "127.0.0.1", "-port", "-1", "-http-port", "-1", "-store-dir", t.TempDir()}, extra...)
	pr, pw := io.Pipe()
	s := &instance{stderr: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		s.err = run(ctx, args, pw, s.stderr)
		pw.Close()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })
	line, err := bufio.NewReader(pr).ReadString('\n')
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err != nil {
		t.Fatalf("no ready line (%v); log:\n%s", err, s.stderr)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		t.Fatalf("ready line %q, want \"ready <client URL> <monitoring URL>\"", line)
	}
	s.client, s.monitor = f[1], f[2]
	return s
}

// stop cancels run's context and returns run's result.
func (s *instance) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of its context ending")
		return nil
	}
}

func TestServesJetStream(t *testing.T) {
	s := start(t, "-server-name", "natsd-test", "-max-payload", "2MiB")

	resp, err := http.Get(s.monitor + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("/healthz: %d %s", resp.StatusCode, body)
	}

	nc, err := nats.Connect(s.client)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != 2<<20 {
		t.Errorf("max payload %d, want %d (-max-payload 2MiB)", got, 2<<20)
	}
	if got := nc.ConnectedServerName(); got != "natsd-test" {
		t.Errorf("server name %q, want natsd-test", got)
	}

	// What the proxies do: a KV bucket in memory storage.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "members", Storage: jetstream.MemoryStorage, History: 1})
	if err != nil {
		t.Fatalf("create KV bucket: %v", err)
	}
	rev, err := kv.Create(ctx, "g.alice", []byte("proxy1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "g.alice", []byte("proxy2")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Errorf("second Create of one key: %v, want ErrKeyExists", err)
	}
	e, err := kv.Get(ctx, "g.alice")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value()) != "proxy1" || e.Revision() != rev {
		t.Errorf("Get: %q revision %d, want \"proxy1\" revision %d", e.Value(), e.Revision(), rev)
	}
	// A file bucket works too, under -js-max-file.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "onfile", Storage: jetstream.FileStorage}); err != nil {
		t.Errorf("create file KV bucket: %v", err)
	}

	if err := s.stop(t); err != nil {
		t.Errorf("run after cancel: %v, want nil", err)
	}
	if !strings.Contains(s.stderr.String(), "[INF] Server Exiting") {
		t.Errorf("log has no \"Server Exiting\" line:\n%s", s.stderr)
	}
}

func TestHealthcheck(t *testing.T) {
	s := start(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "-url", s.monitor + "/healthz"}, &out, io.Discard); err != nil {
		t.Errorf("healthcheck of a serving natsd: %v", err)
	}
	if out.String() != "ok\n" {
		t.Errorf("healthcheck printed %q, want \"ok\\n\"", out.String())
	}

	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"status":"unavailable","error":"JetStream has not established contact with a meta leader"}`, http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()
	if err := run(context.Background(), []string{"healthcheck", "-url", unhealthy.URL + "/healthz"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("healthcheck of a 503: %v, want an error naming 503", err)
	}

	s.stop(t)
	if err := run(context.Background(), []string{"healthcheck", "-url", s.monitor + "/healthz", "-timeout", "2s"}, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck of a stopped natsd succeeded")
	}
}

// TestExitCodes runs the program as a process: the exit code is what
// Docker's HEALTHCHECK and docker-compose read.
func TestExitCodes(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"healthy", []string{"healthcheck", "-url", s.monitor + "/healthz"}, 0},
		{"nothing listening", []string{"healthcheck", "-url", "http://" + closedAddr(t) + "/healthz"}, 1},
		{"bad flag", []string{"-no-such-flag"}, 2},
		{"bad size", []string{"-max-payload", "lots"}, 2},
		{"help", []string{"-h"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := mainCmd(tc.args...).CombinedOutput()
			if code := exitCode(t, err); code != tc.want {
				t.Errorf("natsd %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), code, tc.want, out)
			}
		})
	}
}

// TestSignalExitsZero sends SIGTERM to a serving natsd process.
func TestSignalExitsZero(t *testing.T) {
	cmd := mainCmd("-host", "127.0.0.1", "-port", "-1", "-http-port", "-1", "-store-dir", t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("ready line %q (%v); log:\n%s", line, err, &stderr)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := exitCode(t, err); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0; log:\n%s", code, &stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("natsd still running 30s after SIGTERM")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stderr syncBuffer
	err = run(ctx, []string{"-host", "127.0.0.1", "-port", strconv.Itoa(port), "-http-port", "0", "-store-dir", t.TempDir()}, io.Discard, &stderr)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("run on a port in use: %v (context: %v), want a prompt error", err, ctx.Err())
	}
	if !strings.Contains(stderr.String(), "[FTL]") {
		t.Errorf("log has no [FTL] line:\n%s", &stderr)
	}
}

func mainCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), natsdMainEnv+"=1")
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("not run: %v", err)
	}
	return ee.ExitCode()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
