package main

import (
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// These tests build the real binary and run it as a subprocess: what main
// adds to run (signals, exit codes, os.Args and the real environment).

// TestBinary builds the proxy once and runs each scenario against it.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the binary with")
	}
	checkLeaks(t)
	bin := filepath.Join(t.TempDir(), "proxy")
	// The version as `make build` sets it from git describe.
	ldflags := "-X github.com/wsproxy/wsproxy/internal/version.tag=" + binaryVersion
	if out, err := exec.Command(goTool, "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("FlagsEnvAndSIGTERM", func(t *testing.T) { testBinarySIGTERM(t, bin) })
	t.Run("SIGINT", func(t *testing.T) { testBinarySIGINT(t, bin) })
	t.Run("Version", func(t *testing.T) { testBinaryVersion(t, bin) })
	t.Run("SecondSignal", func(t *testing.T) { testBinarySecondSignal(t, bin) })
	t.Run("Healthcheck", func(t *testing.T) { testBinaryHealthcheck(t, bin) })
	t.Run("InvalidConfig", func(t *testing.T) { testBinaryInvalid(t, bin) })
	t.Run("FloodAtDescriptorLimit", func(t *testing.T) { testBinaryFloodAtDescriptorLimit(t, bin) })
}

// process is the proxy binary running.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan struct{} // closed when it has exited; then err is set
	err            error
	addr           string // from the startup line, if startBinary waited for it
}

// runBinary starts bin with args and exactly the environment env.
func runBinary(t *testing.T, bin string, args []string, env ...string) *process {
	t.Helper()
	p := &process{
		cmd:    exec.Command(bin, args...),
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	p.cmd.Env = append([]string{}, env...) // not nil: nothing inherited
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// startBinary runs the proxy and waits for its startup line.
func startBinary(t *testing.T, bin string, args []string, env ...string) *process {
	t.Helper()
	p := runBinary(t, bin, args, env...)
	waitFor(t, 10*time.Second, "the startup line", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("proxy exited (%v) before listening; stderr:\n%s", p.err, p.stderr)
		default:
		}
		e, ok := logEntry(p.stderr.String(), "proxy listening")
		if ok {
			p.addr, _ = e["addr"].(string)
		}
		return ok
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("still running after %v; stderr:\n%s", d, p.stderr)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		t.Fatalf("proxy did not exit normally: %v", p.err)
		return -1
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// testBinarySIGTERM: settings come from the real environment and flags (the
// flag winning); SIGTERM closes clients with 1001 and the process exits 0.
func testBinarySIGTERM(t *testing.T, bin string) {
	p := startBinary(t, bin, []string{"--addr", "127.0.0.1:0", "--slow-consumer", "backpressure"},
		"PROXY_LOG_FORMAT=json",
		"PROXY_SEND_QUEUE_BYTES=2MiB",
		"PROXY_SLOW_CONSUMER=disconnect",
		"PROXY_ADDR=127.0.0.1:1", // the flag wins
	)
	e, _ := logEntry(p.stderr.String(), "proxy listening")
	if e["send_queue_bytes"] != "2MiB" || e["slow_consumer"] != "backpressure" || p.addr == "127.0.0.1:1" {
		t.Errorf("startup line %v: want send_queue_bytes 2MiB from the environment, slow_consumer and addr from the flags", e)
	}
	waitReady(t, p.addr)
	a := dial(t, p.addr, "a", "g")
	b := dial(t, p.addr, "b", "g")
	waitMetric(t, p.addr, "wsproxy_connections", func(v float64) bool { return v == 2 }, "== 2")
	send(t, a, websocket.MessageText, []byte("through the binary"))
	if _, got := receive(t, b); string(got) != "through the binary" {
		t.Fatalf("b got %q", got)
	}

	ends := make(chan error, 2)
	for _, c := range []*websocket.Conn{a, b} {
		go func() { ends <- closeOf(c, 10*time.Second) }()
	}
	p.signal(t, syscall.SIGTERM)
	for range 2 {
		if err := <-ends; !isGoingAway(err) {
			t.Errorf("client ended with %v, want 1001 going away", err)
		}
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr)
	}
	if _, ok := logEntry(p.stderr.String(), "shutdown complete"); !ok {
		t.Errorf("no shutdown complete line; stderr:\n%s", p.stderr)
	}
}

// testBinarySecondSignal: while the first signal's drain waits for a receiver
// that does not read, a second signal exits at once with status 1.
func testBinarySecondSignal(t *testing.T, bin string) {
	p := startBinary(t, bin, []string{
		"--addr=127.0.0.1:0", "--send-queue-bytes=64MiB", "--write-timeout=1m", "--shutdown-timeout=1m",
	})
	waitReady(t, p.addr)
	a := dial(t, p.addr, "a", "g")
	_ = dial(t, p.addr, "b", "g") // never reads
	waitMetric(t, p.addr, "wsproxy_connections", func(v float64) bool { return v == 2 }, "== 2")
	sendBacklog(t, p.addr, a, 64)

	p.signal(t, syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the drain to start", func() bool {
		_, ok := logEntry(p.stderr.String(), "shutting down: draining")
		return ok
	})
	select {
	case <-p.exited:
		t.Fatalf("exited (%v) during the drain, with a receiver still owed messages", p.err)
	default:
	}
	start := time.Now()
	p.signal(t, syscall.SIGINT)
	code := p.wait(t, 10*time.Second)
	if code != 1 {
		t.Errorf("exit code %d after a second signal, want 1", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to exit after the second signal", d)
	}
	if !strings.Contains(p.stderr.String(), "second signal") {
		t.Errorf("stderr does not say why it exited:\n%s", p.stderr)
	}
}

// testBinaryHealthcheck: `proxy healthcheck` exits 0 against a running proxy
// and 1 against a port where nothing listens.
func testBinaryHealthcheck(t *testing.T, bin string) {
	p := startBinary(t, bin, []string{"--addr=127.0.0.1:0"})
	hc := runBinary(t, bin, []string{"healthcheck", "--url", "http://" + p.addr + "/healthz"})
	if code := hc.wait(t, 10*time.Second); code != 0 {
		t.Errorf("healthcheck of a running proxy: exit %d; stderr %s", code, hc.stderr)
	}
	if strings.TrimSpace(hc.stdout.String()) != "ok" {
		t.Errorf("healthcheck printed %q", hc.stdout)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	hc = runBinary(t, bin, []string{"healthcheck", "--url", "http://" + dead + "/healthz", "--timeout", "2s"})
	if code := hc.wait(t, 10*time.Second); code != 1 {
		t.Errorf("healthcheck of a dead port: exit %d, want 1", code)
	}
	if !strings.Contains(hc.stderr.String(), "healthcheck") {
		t.Errorf("healthcheck failure not explained on stderr: %q", hc.stderr)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// testBinaryInvalid: bad settings exit 2 before listening, with the error
// alone on stderr (no usage before it to scroll it away) and a pointer to
// --help after it; --help exits 0.
func testBinaryInvalid(t *testing.T, bin string) {
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "unknown flag --bogus"},
		{"bad size", []string{"--send-queue-bytes=lots"}, nil, `--send-queue-bytes="lots": want a size such as 1048576, 64KiB or 8MiB`},
		{"bad env", nil, []string{"PROXY_SLOW_CONSUMER=drop"}, `PROXY_SLOW_CONSUMER="drop": want backpressure or disconnect`},
		{"bad duration env", nil, []string{"PROXY_WRITE_TIMEOUT=soon"}, `PROXY_WRITE_TIMEOUT="soon": want a duration such as 10s or 1m30s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := runBinary(t, bin, append(tt.args, "--addr=127.0.0.1:0"), tt.env...)
			if code := p.wait(t, 10*time.Second); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			want := "proxy: " + tt.want + "\n(proxy --help lists every flag and its variable)\n"
			if got := p.stderr.String(); got != want {
				t.Errorf("stderr\n%q\nwant\n%q", got, want)
			}
			if p.stdout.String() != "" {
				t.Errorf("stdout %q, want nothing (no usage before the error)", p.stdout)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		p := runBinary(t, bin, []string{"--help"})
		if code := p.wait(t, 10*time.Second); code != 0 {
			t.Errorf("--help: exit %d, want 0", code)
		}
		if !strings.Contains(p.stdout.String(), "--send-queue-bytes [PROXY_SEND_QUEUE_BYTES]") {
			t.Errorf("--help output:\n%s", p.stdout)
		}
	})
}

// binaryVersion is the version TestBinary's build is stamped with.
const binaryVersion = "v0.0.0-test-g1234567"

// testBinarySIGINT: Ctrl-C (SIGINT) drains, closes clients with 1001 and
// exits 0, so `make run` ends without an error.
func testBinarySIGINT(t *testing.T, bin string) {
	p := startBinary(t, bin, []string{"--addr=127.0.0.1:0"}, "PROXY_LOG_FORMAT=json")
	waitReady(t, p.addr)
	c := dial(t, p.addr, "a", "g")
	waitMetric(t, p.addr, "wsproxy_connections", func(v float64) bool { return v == 1 }, "== 1")
	end := make(chan error, 1)
	go func() { end <- closeOf(c, 10*time.Second) }()
	p.signal(t, syscall.SIGINT)
	if err := <-end; !isGoingAway(err) {
		t.Errorf("client ended with %v, want 1001 going away", err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0; stderr:\n%s", code, p.stderr)
	}
	if _, ok := logEntry(p.stderr.String(), "shutdown complete"); !ok {
		t.Errorf("no shutdown complete line; stderr:\n%s", p.stderr)
	}
}

// testBinaryVersion: the version stamped at build time is what --version
// prints, and what the start-up line and /healthz say; a PROXY_* variable
// of the real environment that no flag reads is warned about.
func testBinaryVersion(t *testing.T, bin string) {
	v := runBinary(t, bin, []string{"--version"})
	if code := v.wait(t, 10*time.Second); code != 0 || v.stdout.String() != "wsproxy "+binaryVersion+"\n" {
		t.Errorf("--version: exit %d, stdout %q, want %q", code, v.stdout, "wsproxy "+binaryVersion+"\n")
	}

	p := startBinary(t, bin, []string{"--addr=127.0.0.1:0"}, "PROXY_LOG_FORMAT=json", "PROXY_WRITE_TIMEOUTS=5s")
	if e, _ := logEntry(p.stderr.String(), "proxy listening"); e["version"] != binaryVersion {
		t.Errorf("start-up line %v, want version %s", e, binaryVersion)
	}
	if code, body := get(t, p.addr, "/healthz"); code != 200 || !strings.Contains(body, `"version":"`+binaryVersion+`"`) {
		t.Errorf("/healthz: %d %s, want the version %s", code, body, binaryVersion)
	}
	if e, ok := logEntry(p.stderr.String(), "unknown PROXY_ variable ignored: no flag reads it (proxy --help lists them)"); !ok || e["variable"] != "PROXY_WRITE_TIMEOUTS" {
		t.Errorf("no warning naming PROXY_WRITE_TIMEOUTS; stderr:\n%s", p.stderr)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
