package main

import (
	"bufio"
	"bytes"
	"context"
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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// target is the proxy under test: one this tool started (pid > 0) or one
// already running (-addr).
type target struct {
	addr    string // host:port
	origin  string // how it came to be: "built from ./cmd/proxy", "-proxy-bin X", "-addr"
	pprof   string // base URL of its pprof listener, if known
	cmd     *exec.Cmd
	done    chan struct{} // closed when the started process has exited
	waitErr error         // set before done is closed
	logPath string
	stopped bool
}

func (t *target) pid() int {
	if t.cmd == nil {
		return 0
	}
	return t.cmd.Process.Pid
}

// exited reports whether a started proxy has exited.
func (t *target) exited() bool {
	if t.done == nil {
		return false
	}
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// startTarget builds and starts the proxy, starts -proxy-bin, or checks that
// -addr answers.
func startTarget(ctx context.Context, cfg config, stderr io.Writer) (*target, error) {
	if cfg.addr != "" {
		host, _, err := net.SplitHostPort(cfg.addr)
		if err != nil {
			return nil, fmt.Errorf("-addr: %w", err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, errors.New("-addr must be a loopback address")
		}
		t := &target{addr: cfg.addr, origin: "-addr", pprof: strings.TrimSuffix(cfg.pprof, "/")}
		if err := waitReady(ctx, t, 5*time.Second); err != nil {
			return nil, err
		}
		return t, nil
	}
	bin, origin := cfg.proxyBin, "-proxy-bin "+cfg.proxyBin
	if bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		bin, origin = filepath.Join(cfg.outDir, "proxy"), "built from "+root+"/cmd/proxy"
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/proxy")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/proxy: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	t := &target{
		addr:    "127.0.0.1:" + strconv.Itoa(port),
		origin:  origin,
		pprof:   "http://127.0.0.1:" + strconv.Itoa(pport),
		done:    make(chan struct{}),
		logPath: filepath.Join(cfg.outDir, "proxy.log"),
	}
	logf, err := os.Create(t.logPath)
	if err != nil {
		return nil, err
	}
	t.cmd = exec.Command(bin,
		"--addr", t.addr,
		"--log-format", "json",
		"--admin-token", cfg.token,
		"--write-timeout", cfg.writeTimeout.String(),
		"--message-idle-timeout", cfg.idleTimeout.String(),
		"--ping-interval", cfg.pingInterval.String(),
		"--ping-timeout", cfg.pingTimeout.String(),
		"--send-queue-bytes", strconv.FormatInt(cfg.queueBytes, 10)+"B",
		"--buffer-bytes", strconv.FormatInt(cfg.bufferBytes, 10)+"B",
	)
	t.cmd.Env = append(os.Environ(), "WSPROXY_PPROF_ADDR=127.0.0.1:"+strconv.Itoa(pport))
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		t.waitErr = t.cmd.Wait()
		logf.Close()
		close(t.done)
	}()
	if err := waitReady(ctx, t, 15*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

// stop ends a started proxy: SIGTERM, then SIGKILL after 20 s. It returns
// the process's exit error (nil for status 0). Calling it again is a no-op.
func (t *target) stop() error {
	if t.cmd == nil || t.stopped {
		return nil
	}
	t.stopped = true
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.done:
	case <-time.After(20 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.done
		return errors.New("did not exit within 20s of SIGTERM; killed")
	}
	return t.waitErr
}

func waitReady(ctx context.Context, t *target, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := httpc.Get("http://" + t.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if t.exited() {
			return fmt.Errorf("proxy exited: %v (log: %s)", t.waitErr, t.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("proxy at %s not ready after %v (log: %s)", t.addr, timeout, t.logPath)
}

// httpc is the client for every HTTP request to the proxy.
var httpc = &http.Client{Timeout: 10 * time.Second}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run proxysoak inside the wsproxy module, or pass -proxy-bin or -addr")
	}
	return filepath.Dir(gomod), nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// metrics is one scrape of the proxy's /metrics.
type metrics map[string]*dto.MetricFamily

func scrape(t *target) (metrics, error) {
	resp, err := httpc.Get("http://" + t.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	return metrics(fams), nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// value is the sum of every sample of a family; ok is false if it is absent.
func (ms metrics) value(name string) (float64, bool) {
	f, ok := ms[name]
	if !ok {
		return 0, false
	}
	var sum float64
	for _, m := range f.GetMetric() {
		sum += metricValue(m)
	}
	return sum, true
}

// byLabels lists a family's samples as "k=v,k=v" -> value.
func (ms metrics) byLabels(name string) map[string]float64 {
	out := map[string]float64{}
	f, ok := ms[name]
	if !ok {
		return out
	}
	for _, m := range f.GetMetric() {
		var parts []string
		for _, l := range m.GetLabel() {
			parts = append(parts, l.GetName()+"="+l.GetValue())
		}
		out[strings.Join(parts, ",")] += metricValue(m)
	}
	return out
}

// resources is one reading of the proxy's footprint. RSS and HWM are 0 when
// the tool did not start the proxy.
type resources struct {
	goroutines, fds, heap, rss, hwm int64
	conns, queued                   int64
}

func (r resources) String() string {
	s := fmt.Sprintf("goroutines %d, open fds %d, heap in use %s", r.goroutines, r.fds, sizeString(r.heap))
	if r.rss > 0 {
		s += fmt.Sprintf(", VmRSS %s, VmHWM %s", sizeString(r.rss), sizeString(r.hwm))
	}
	return s
}

func (r *resources) max(o resources) {
	r.goroutines = max(r.goroutines, o.goroutines)
	r.fds = max(r.fds, o.fds)
	r.heap = max(r.heap, o.heap)
	r.rss = max(r.rss, o.rss)
	r.hwm = max(r.hwm, o.hwm)
	r.conns = max(r.conns, o.conns)
	r.queued = max(r.queued, o.queued)
}

// sample reads the proxy's resources; with gc it first forces a garbage
// collection through pprof (?gc=1 on the heap profile), when it can.
func sample(t *target, gc bool) (resources, error) {
	if gc && t.pprof != "" {
		if resp, err := httpc.Get(t.pprof + "/debug/pprof/heap?gc=1"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	ms, err := scrape(t)
	if err != nil {
		return resources{}, err
	}
	var r resources
	for _, x := range []struct {
		name string
		dst  *int64
	}{
		{"go_goroutines", &r.goroutines},
		{"process_open_fds", &r.fds},
		{"go_memstats_heap_inuse_bytes", &r.heap},
		{"wsproxy_connections", &r.conns},
		{"wsproxy_queued_bytes", &r.queued},
	} {
		v, ok := ms.value(x.name)
		if !ok {
			return r, fmt.Errorf("/metrics has no %s", x.name)
		}
		*x.dst = int64(v)
	}
	if pid := t.pid(); pid > 0 {
		r.rss, r.hwm, _ = readMem(pid)
	}
	return r, nil
}

// cpuTime is the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat (in USER_HZ ticks, 100 a second on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: count after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / 100, nil
}

// readMem reads VmRSS and VmHWM from /proc/<pid>/status, in bytes.
func readMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	return rss, hwm, nil
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
