package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/internal/version"
)

// TestRunStartupLines: the first log line carries the version and every
// setting; the second is for a person: the page's URL and a WebSocket URL to
// try, both of the address actually listened on. /healthz says the version.
func TestRunStartupLines(t *testing.T) {
	checkLeaks(t)
	p := startProxy(t, []string{"--addr=127.0.0.1:0", "--log-format=json"}, nil)
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want two start-up lines, got:\n%s", p.stderr)
	}
	var first, second map[string]any
	if json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[1]), &second) != nil {
		t.Fatalf("start-up lines are not JSON:\n%s", p.stderr)
	}
	if first["message"] != "proxy listening" || first["version"] != version.String() {
		t.Errorf("first line %v: want proxy listening with version %q", first, version.String())
	}
	want := "open http://" + p.addr + "/ in a browser, or connect any WebSocket client to ws://" + p.addr + "/ws?id=alice&groupName=demo"
	if second["message"] != want || second["level"] != "info" {
		t.Errorf("second line %v, want the message %q", second, want)
	}

	code, body := get(t, p.addr, "/healthz")
	var h struct{ Status, Version string }
	if code != 200 || json.Unmarshal([]byte(body), &h) != nil || h.Status != "ok" || h.Version != version.String() {
		t.Errorf("/healthz: %d %s, want 200 with status ok and version %q", code, body, version.String())
	}
}

func TestURLs(t *testing.T) {
	t.Parallel()
	tests := []struct{ addr, page, ws string }{
		{":8080", "http://localhost:8080/", "ws://localhost:8080/ws?id=alice&groupName=demo"},
		{"0.0.0.0:8080", "http://localhost:8080/", "ws://localhost:8080/ws?id=alice&groupName=demo"},
		{"[::]:9000", "http://localhost:9000/", "ws://localhost:9000/ws?id=alice&groupName=demo"},
		{"127.0.0.1:9000", "http://127.0.0.1:9000/", "ws://127.0.0.1:9000/ws?id=alice&groupName=demo"},
		{"[::1]:9000", "http://[::1]:9000/", "ws://[::1]:9000/ws?id=alice&groupName=demo"},
		{"192.0.2.7:80", "http://192.0.2.7:80/", "ws://192.0.2.7:80/ws?id=alice&groupName=demo"},
	}
	for _, tt := range tests {
		page, ws := urls(fakeAddr(tt.addr))
		if page != tt.page || ws != tt.ws {
			t.Errorf("urls(%s) = %s, %s; want %s, %s", tt.addr, page, ws, tt.page, tt.ws)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

var _ net.Addr = fakeAddr("")

// TestRunVersion: --version prints the version to stdout and exits without
// parsing the other flags or listening.
func TestRunVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"--addr=127.0.0.1:0", "--version"}, {"--write-timeout=soon", "--version"}} {
		var stdout, stderr syncBuffer
		if err := run(context.Background(), args, env(nil), &stdout, &stderr); err != nil {
			t.Errorf("run(%q) = %v", args, err)
		}
		if got, want := stdout.String(), "wsproxy "+version.String()+"\n"; got != want {
			t.Errorf("run(%q) printed %q, want %q", args, got, want)
		}
		if stderr.String() != "" {
			t.Errorf("run(%q) logged %q", args, stderr.String())
		}
	}
}

// TestRunUnknownVars: a PROXY_* variable that no flag reads is warned about
// once at start, by name (never its value); known ones are not.
func TestRunUnknownVars(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start, log, and shut down at once
	var stdout, stderr syncBuffer
	environ := []string{"PROXY_SEND_QUEUE_BYTE=secret-ish", "PROXY_SEND_QUEUE_BYTES=2MiB", "PROXY_HEALTHCHECK_URL=http://x/healthz", "PATH=/bin"}
	if err := run(ctx, []string{"--addr=127.0.0.1:0", "--log-format=json"}, env(nil), &stdout, &stderr, environ...); err != nil {
		t.Fatal(err)
	}
	logs := stderr.String()
	e, ok := logEntry(logs, "unknown PROXY_ variable ignored: no flag reads it (proxy --help lists them)")
	if !ok || e["variable"] != "PROXY_SEND_QUEUE_BYTE" || e["level"] != "warn" {
		t.Fatalf("no warning for PROXY_SEND_QUEUE_BYTE; logs:\n%s", logs)
	}
	if n := strings.Count(logs, "unknown PROXY_ variable"); n != 1 {
		t.Errorf("%d warnings, want 1 (PROXY_SEND_QUEUE_BYTES and PROXY_HEALTHCHECK_URL are known); logs:\n%s", n, logs)
	}
	if strings.Contains(logs, "secret-ish") {
		t.Error("the warning logged the variable's value")
	}
}
