package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// binaries are the programs under test, built once per run into a temporary
// directory.
type binaries struct {
	dir   string
	proxy string // go build ./cmd/proxy
	nats  string // go build ./cmd/proxybench/natsserver
	self  string // this program, re-executed as a baseline sink
}

func buildBinaries(ctx context.Context, root string) (*binaries, error) {
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return nil, err
	}
	b := &binaries{dir: dir, proxy: filepath.Join(dir, "proxy"), nats: filepath.Join(dir, "natsserver")}
	for _, t := range []struct{ out, pkg string }{
		{b.proxy, "./cmd/proxy"},
		{b.nats, "./cmd/proxybench/natsserver"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build %s: %w", t.pkg, err)
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	return b, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run proxybench inside the wsproxy module")
	}
	return filepath.Dir(gomod), nil
}

// server is one system under test running as a subprocess, so that its CPU
// time and memory can be read from /proc alone.
type server struct {
	name    string // "wsproxy", "nats", "direct-ws", "tcp"
	cmd     *exec.Cmd
	addr    string // host:port of the data listener
	monitor string // base URL of an HTTP endpoint with counters, if any
	pprof   string // base URL of the proxy's pprof listener, if enabled
	stdin   io.WriteCloser
	done    chan struct{} // closed when the process has exited
	exitErr error         // cmd.Wait's error, once done is closed
	logPath string
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) cpu() time.Duration {
	d, err := cpuTime(s.pid())
	if err != nil {
		return 0
	}
	return d
}

func (s *server) mem() memStatus {
	m, _ := readMem(s.pid())
	return m
}

func (s *server) waitConnections(n int, timeout time.Duration) error {
	return waitConnections(s, n, timeout)
}

// stop ends the server (SIGTERM, then SIGKILL after a grace period) and
// waits for it.
func (s *server) stop() {
	if s.stdin != nil {
		_ = s.stdin.Close()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func startCmd(name string, bin string, args []string, logDir string, env ...string) (*server, *bufio.Reader, error) {
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	logPath := filepath.Join(logDir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	s := &server{name: name, cmd: cmd, stdin: stdin, done: make(chan struct{}), logPath: logPath}
	go func() { _, _ = io.Copy(logf, errPipe) }()
	go func() { s.exitErr = cmd.Wait(); logf.Close(); close(s.done) }()
	return s, bufio.NewReader(out), nil
}

// pprofEnabled makes startProxy turn on the proxy's pprof listener.
var pprofEnabled bool

// proxyExtra are flags (-proxy-args) for every proxy startProxy runs.
var proxyExtra []string

// startProxy runs the built wsproxy on a free loopback port and waits for
// /readyz.
func startProxy(b *binaries, logDir string, extra ...string) (*server, error) {
	return startNamedProxy(b, logDir, "wsproxy", extra...)
}

// startNamedProxy is startProxy for a proxy called name (its log is
// name.log).
func startNamedProxy(b *binaries, logDir, name string, extra ...string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"--addr", addr, "--log-format", "json"}, proxyExtra...)
	args = append(args, extra...)
	var env []string
	var pprofURL string
	if pprofEnabled {
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		env = append(env, "WSPROXY_PPROF_ADDR=127.0.0.1:"+strconv.Itoa(pport))
		pprofURL = "http://127.0.0.1:" + strconv.Itoa(pport)
	}
	s, out, err := startCmd(name, b.proxy, args, logDir, env...)
	if err != nil {
		return nil, err
	}
	s.pprof = pprofURL
	go func() { _, _ = io.Copy(io.Discard, out) }()
	s.addr = addr
	s.monitor = "http://" + addr
	if err := waitHTTP(s, s.monitor+"/readyz"); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startNATS runs nats-server with WebSocket (no TLS) on a free loopback port.
func startNATS(b *binaries, logDir string, maxPayload int) (*server, error) {
	wsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-ws-port", strconv.Itoa(wsPort), "-http-port", strconv.Itoa(httpPort),
		"-max-payload", strconv.Itoa(maxPayload)}
	s, out, err := startCmd("nats", b.nats, args, logDir)
	if err != nil {
		return nil, err
	}
	s.addr = "127.0.0.1:" + strconv.Itoa(wsPort)
	s.monitor = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	if err := waitLine(s, out, "ready"); err != nil {
		s.stop()
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return s, waitTCP(s.addr)
}

// startNATSBus runs nats-server with JetStream (memory store) as the bus of a
// wsproxy cluster: addr is its client port, monitor its /varz.
func startNATSBus(b *binaries, logDir string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-jetstream", "-port", strconv.Itoa(port), "-http-port", strconv.Itoa(httpPort)}
	s, out, err := startCmd("nats-bus", b.nats, args, logDir)
	if err != nil {
		return nil, err
	}
	s.addr = "127.0.0.1:" + strconv.Itoa(port)
	s.monitor = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	if err := waitLine(s, out, "ready"); err != nil {
		s.stop()
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return s, waitTCP(s.addr)
}

// startSink runs this program as a baseline server: "ws" accepts WebSocket
// connections (coder/websocket, no relay) and reads; "tcp" accepts TCP
// connections and reads.
func startSink(b *binaries, logDir, mode string) (*server, error) {
	name := map[string]string{"ws": "direct-ws", "tcp": "tcp"}[mode]
	s, out, err := startCmd(name, b.self, []string{"sink", "-mode", mode, "-addr", "127.0.0.1:0"}, logDir)
	if err != nil {
		return nil, err
	}
	line, err := readLine(s, out)
	if err != nil {
		s.stop()
		return nil, err
	}
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		s.stop()
		return nil, fmt.Errorf("%s: unexpected first line %q", name, line)
	}
	s.addr = addr
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return s, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func readLine(s *server, r *bufio.Reader) (string, error) {
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := r.ReadString('\n')
		ch <- res{strings.TrimSpace(l), err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			return "", fmt.Errorf("%s: %w (log: %s)", s.name, x.err, s.logPath)
		}
		return x.line, nil
	case <-time.After(15 * time.Second):
		return "", fmt.Errorf("%s: no output after 15s (log: %s)", s.name, s.logPath)
	}
}

func waitLine(s *server, r *bufio.Reader, want string) error {
	line, err := readLine(s, r)
	if err != nil {
		return err
	}
	if line != want {
		return fmt.Errorf("%s: got %q, want %q", s.name, line, want)
	}
	return nil
}

func waitHTTP(s *server, url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited: %v (log: %s)", s.name, s.exitErr, s.logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: %s not ready after 15s (log: %s)", s.name, url, s.logPath)
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not accepting after 10s", addr)
}

// proxyGauge reads one unlabelled sample from the proxy's /metrics.
func proxyMetric(s *server, name string) (float64, error) {
	resp, err := http.Get(s.monitor + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var sum float64
	found := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if metric == name || strings.HasPrefix(metric, name+"{") {
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err == nil {
				sum += v
				found = true
			}
		}
	}
	if !found {
		return 0, nil
	}
	return sum, sc.Err()
}

// natsVarz reads one numeric field of nats-server's /varz.
func natsVarz(s *server, field string) (float64, error) {
	resp, err := http.Get(s.monitor + "/varz")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, err
	}
	v, _ := m[field].(float64)
	return v, nil
}

// waitConnections waits until the server counts n client connections.
func waitConnections(s *server, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var got float64
	var err error
	for time.Now().Before(deadline) {
		switch s.name {
		case "wsproxy":
			got, err = proxyMetric(s, "wsproxy_connections")
		case "nats":
			got, err = natsVarz(s, "connections")
		default:
			return nil
		}
		if err == nil && int(got) == n {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: %v connections after %v, want %d (err %v)", s.name, got, timeout, n, err)
}

// profileCPU saves a CPU profile of the proxy over d to path, in the
// background; wait for the returned channel.
func profileCPU(s *server, d time.Duration, path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		secs := max(1, int(d.Round(time.Second)/time.Second))
		resp, err := http.Get(s.pprof + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}

// saveProfile saves the proxy's pprof profile `name` (heap, goroutine, ...)
// to path.
func saveProfile(s *server, name, path string) error {
	resp, err := http.Get(s.pprof + "/debug/pprof/" + name)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
