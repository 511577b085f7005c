package main

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one in-process run of the CLI.
type proc struct {
	stdout, stderr syncBuffer
	code           chan int
	cancel         context.CancelFunc
}

// start runs the CLI in-process against p with stdin (nil: an empty one)
// and stdout (nil: a buffer).
func start(t *testing.T, p *proxytest.Proxy, stdin io.Reader, stdout io.Writer, args ...string) *proc {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	pr := &proc{code: make(chan int, 1)}
	if stdout == nil {
		stdout = &pr.stdout
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr.cancel = cancel
	getenv := func(k string) string {
		if k == "WSPROXY_URL" {
			return p.URL
		}
		return ""
	}
	go func() { pr.code <- run(ctx, args, stdin, stdout, &pr.stderr, getenv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-pr.code:
		case <-time.After(20 * time.Second):
			t.Error("the command did not end after its context was cancelled")
		}
	})
	return pr
}

// wait waits for the command's exit code.
func (pr *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case c := <-pr.code:
		pr.code <- c
		return c
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		t.Logf("%s", buf[:runtime.Stack(buf, true)])
		t.Fatalf("the command did not end; stderr:\n%s", pr.stderr.String())
		return -1
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dialRaw(t *testing.T, p *proxytest.Proxy, id, group string) *client.Conn {
	t.Helper()
	c, err := client.Dial(context.Background(), client.Config{URL: p.URL, ID: id, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p.WaitMember(t, group, id)
	return c
}

func TestUsageAndExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), nil, nil, &out, &errb, func(string) string { return "" }); code != exitUsage {
		t.Fatalf("no args: %d", code)
	}
	for _, want := range []string{"chat", "pipe", "send", "receive", "watch", "Exit codes", "3  the proxy refused"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	errb.Reset()
	if code := run(context.Background(), []string{"pipe"}, nil, &out, &errb, func(string) string { return "" }); code != exitUsage {
		t.Fatalf("pipe without --group: %d", code)
	}
}

func ctxBG(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
