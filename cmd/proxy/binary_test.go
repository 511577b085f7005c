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
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("FlagsEnvAndSIGTERM", func(t *testing.T) { testBinarySIGTERM(t, bin) })
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

// testBinaryInvalid: bad settings exit non-zero with a message naming them,
// before listening; --help exits 0.
func testBinaryInvalid(t *testing.T, bin string) {
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "bogus"},
		{"bad size", []string{"--send-queue-bytes=lots"}, nil, "send-queue-bytes"},
		{"bad env", nil, []string{"PROXY_SLOW_CONSUMER=drop"}, "slow-consumer"},
		{"bad duration env", nil, []string{"PROXY_WRITE_TIMEOUT=soon"}, "PROXY_WRITE_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := runBinary(t, bin, append(tt.args, "--addr=127.0.0.1:0"), tt.env...)
			if code := p.wait(t, 10*time.Second); code == 0 {
				t.Errorf("exit code 0, want non-zero")
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, "proxy: ") || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not name %q", stderr, tt.want)
			}
			if strings.Contains(stderr, "proxy listening") {
				t.Error("it started listening")
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
