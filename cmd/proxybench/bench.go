package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/internal/auth"
)

// bench runs the workloads and keeps what the targets are judged on.
type bench struct {
	ctx  context.Context
	p    params
	bins *binaries
	root string
	log  io.Writer

	fan       map[string]map[int]fanoutResult // system -> size -> result
	targets   []target
	proxyOnly bool   // skip NATS and the baselines (for quick iterations)
	pprofDir  string // where proxy CPU profiles go, if set
}

func (b *bench) profilePath(name string) string {
	if b.pprofDir == "" {
		return ""
	}
	return filepath.Join(b.pprofDir, name)
}

// systems filters names down to wsproxy under -proxy-only.
func (b *bench) systems(names ...string) []string {
	if b.proxyOnly {
		var only []string
		for _, n := range names {
			if strings.HasPrefix(n, "wsproxy") {
				only = append(only, n)
			}
		}
		return only
	}
	return names
}

// target is one line of the targets table.
type target struct {
	workload, goal, figure string
	met                    bool
}

func (b *bench) judge(workload, goal string, met bool, format string, args ...any) {
	b.targets = append(b.targets, target{workload, goal, fmt.Sprintf(format, args...), met})
}

const (
	fanGroups  = 10
	fanMembers = 10
	fanWindow  = 1000
)

var fanSizes = []int{64, 1024}

func (b *bench) fanout(out *strings.Builder) error {
	if b.fan != nil {
		return nil
	}
	b.fan = map[string]map[int]fanoutResult{}
	p := b.p
	fmt.Fprintf(out, "\n## Fan-out (closed loop)\n\n%d groups x %d members, one sender per group, %d receivers each; "+
		"each sender keeps at most %d messages ahead of its slowest receiver. Measured for %v after %v of warm-up. "+
		"A delivery is one message received by one receiver (presence watchers per group: %d). Baselines: the same %d senders, each streaming to its "+
		"own connection to a sink that reads and discards (no relay, so a delivery there is one message read).\n",
		fanGroups, fanMembers, fanMembers-1, fanWindow, p.fanMeasure, p.fanWarmup, watchersPerGroup, fanGroups)
	for _, size := range fanSizes {
		var rows []fanoutResult
		for _, sysName := range b.systems("wsproxy", "nats") {
			logf(b.log, "fan-out %s %d B", sysName, size)
			srv, sys, err := b.startSystem(sysName)
			if err != nil {
				return err
			}
			r, err := runFanout(b.ctx, sysName, sys, srv, fanoutConfig{
				groups: fanGroups, members: fanMembers, size: size,
				warmup: p.fanWarmup, measure: p.fanMeasure, window: fanWindow,
				profile: b.profilePath(fmt.Sprintf("fanout-%d.pprof", size)),
			})
			srv.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", sysName, err)
			}
			rows = append(rows, r)
			if b.fan[sysName] == nil {
				b.fan[sysName] = map[int]fanoutResult{}
			}
			b.fan[sysName][size] = r
		}
		for _, mode := range b.systems("ws", "tcp") {
			if mode == "wsproxy" {
				continue
			}
			logf(b.log, "fan-out baseline %s %d B", mode, size)
			srv, err := startSink(b.bins, b.bins.dir, mode)
			if err != nil {
				return err
			}
			r, err := runStreamBaseline(b.ctx, srv, fanGroups, size, p.fanWarmup, p.fanMeasure)
			srv.stop()
			if err != nil {
				return fmt.Errorf("%s baseline: %w", mode, err)
			}
			rows = append(rows, r)
		}
		nats := b.fan["nats"][size]
		fmt.Fprintf(out, "\n### %s messages\n\n", sizeName(int64(size)))
		fmt.Fprintf(out, "| system | deliveries/s (wall) | server CPU s | deliveries per server CPU-s | vs NATS | received / expected | sequence gaps |\n")
		fmt.Fprintf(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, r := range rows {
			fmt.Fprintf(out, "| %s | %s | %.2f | %s | %s | %d / %d | %d |\n", r.system, count(r.perSec()), r.cpu.Seconds(),
				count(r.perCPU()), ratio(r.perCPU(), nats.perCPU()), r.receivedTotal, r.expectedTotal, r.gaps)
		}
		ws := b.fan["wsproxy"][size]
		if b.proxyOnly {
			continue
		}
		ok := ws.perCPU() >= 1.25*nats.perCPU() && ws.gaps == 0 && ws.receivedTotal == ws.expectedTotal
		b.judge("fan-out "+sizeName(int64(size)), "deliveries per server CPU-s >= 1.25 x NATS", ok,
			"%s vs %s (%s)", count(ws.perCPU()), count(nats.perCPU()), ratio(ws.perCPU(), nats.perCPU()))
	}
	return nil
}

func (b *bench) startSystem(name string) (*server, system, error) {
	switch name {
	case "wsproxy":
		srv, err := startProxy(b.bins, b.bins.dir)
		if err != nil {
			return nil, nil, err
		}
		return srv, wsproxySystem{srv.addr}, nil
	case "nats":
		srv, err := startNATS(b.bins, b.bins.dir, 1<<20)
		if err != nil {
			return nil, nil, err
		}
		return srv, natsSystem{srv.addr}, nil
	}
	return nil, nil, fmt.Errorf("unknown system %q", name)
}

func (b *bench) latency(out *strings.Builder) error {
	p := b.p
	fmt.Fprintf(out, "\n## Latency (open loop)\n\nThe fan-out groups, each sender at a fixed rate: together a fraction of "+
		"wsproxy's closed-loop fan-out maximum for that size (the target is judged at one half), the same rate for NATS. "+
		"One-way latency from the send time in the payload (taken just before the write) to the receiver having the "+
		"whole message, over %v (%v below one half). Generator lag is how late senders were on their schedule: the "+
		"load generator shares the two cores, and a late generator means a saturated machine.\n\n",
		p.latMeasure, p.latMeasureLow)
	fmt.Fprintf(out, "| size | of max | system | messages/s sent | deliveries/s | p50 | p99 | p99.9 | max | generator lag p99 | CPU: server + generator, of 2 cores | received / expected | gaps |\n")
	fmt.Fprintf(out, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, size := range fanSizes {
		maxRate := b.fan["wsproxy"][size].perSec() / float64(fanMembers-1)
		for _, frac := range p.latFractions {
			perSender := maxRate * frac / fanGroups
			measure := p.latMeasure
			if frac < 0.5 {
				measure = p.latMeasureLow
			}
			for _, sysName := range b.systems("wsproxy", "nats") {
				logf(b.log, "latency %s %d B at %.0f msgs/s per sender", sysName, size, perSender)
				srv, sys, err := b.startSystem(sysName)
				if err != nil {
					return err
				}
				prof := ""
				if frac == 0.5 {
					prof = b.profilePath(fmt.Sprintf("latency-%d.pprof", size))
				}
				r, err := runFanout(b.ctx, sysName, sys, srv, fanoutConfig{
					groups: fanGroups, members: fanMembers, size: size,
					warmup: p.fanWarmup, measure: measure, rate: perSender, profile: prof,
				})
				srv.stop()
				if err != nil {
					return fmt.Errorf("%s: %w", sysName, err)
				}
				sortInt64(r.lat)
				sortInt64(r.lag)
				p50, p99, p999 := percentile(r.lat, 50), percentile(r.lat, 99), percentile(r.lat, 99.9)
				fmt.Fprintf(out, "| %s | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %.2f + %.2f | %d / %d | %d |\n",
					sizeName(int64(size)), frac, sysName, count(float64(r.sent)/r.wall.Seconds()), count(r.perSec()),
					ms(p50), ms(p99), ms(p999), ms(percentile(r.lat, 100)), ms(percentile(r.lag, 99)),
					r.cpu.Seconds()/r.wall.Seconds(), r.genCPU.Seconds()/r.wall.Seconds(),
					r.receivedTotal, r.expectedTotal, r.gaps)
				if sysName == "wsproxy" && frac == 0.5 {
					ok := p50 <= 300*time.Microsecond && p99 <= 2*time.Millisecond && p999 <= 10*time.Millisecond
					b.judge("latency "+sizeName(int64(size)), "p50 <= 0.3 ms, p99 <= 2 ms, p99.9 <= 10 ms", ok,
						"p50 %s, p99 %s, p99.9 %s at %s deliveries/s", ms(p50), ms(p99), ms(p999), count(r.perSec()))
				}
			}
		}
	}
	return nil
}

func (b *bench) idle(out *strings.Builder) error {
	n := b.p.idleConns
	fmt.Fprintf(out, "\n## Idle connections\n\n%d connections in groups of 2, opened from 16 loopback source addresses, "+
		"then left idle for %v. Per connection: (VmRSS with all connected - VmRSS before) / connections. "+
		"NATS connections each send CONNECT and SUB (one subject per pair). Baselines: the ws sink holds a "+
		"coder/websocket connection with one goroutine blocked reading; the tcp sink one goroutine per socket.\n\n", n, b.p.idleSettle)
	fmt.Fprintf(out, "| system | connections | RSS before | RSS after | per connection | vs wsproxy |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	var wsPer float64
	for _, name := range b.systems("wsproxy", "nats", "ws", "tcp") {
		srv, err := b.startAny(name)
		if err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		logf(b.log, "idle %s: %d connections", srv.name, n)
		conns, r := openConns(b.ctx, srv, n, 32, 2, true)
		if r.failures == 0 {
			if err := waitConnections(srv, n, 20*time.Second); err != nil {
				r.firstErr = err
			}
		}
		time.Sleep(b.p.idleSettle)
		r.after = srv.mem()
		if path := b.profilePath("idle-heap.pprof"); path != "" && srv.pprof != "" {
			if err := saveProfile(srv, "heap", path); err != nil {
				return err
			}
		}
		closeAll(conns)
		srv.stop()
		if r.failures > 0 || r.firstErr != nil {
			return fmt.Errorf("%s: %d of %d connections failed: %v", srv.name, r.failures, n, r.firstErr)
		}
		per := r.perConn()
		if name == "wsproxy" {
			wsPer = per
			b.judge("idle", "<= 16 KiB proxy RSS per connection", per <= 16<<10, "%.1f KiB per connection (%d connections)", per/1024, n)
		}
		fmt.Fprintf(out, "| %s | %d | %s | %s | %.1f KiB | %s |\n", srv.name, n, mib(r.before.RSS), mib(r.after.RSS), per/1024, ratio(per, wsPer))
	}
	return nil
}

func (b *bench) startAny(name string) (*server, error) {
	switch name {
	case "ws", "tcp":
		return startSink(b.bins, b.bins.dir, name)
	}
	srv, _, err := b.startSystem(name)
	return srv, err
}

func (b *bench) handshakes(out *strings.Builder) error {
	n := b.p.handshakes
	const workers = 32
	fmt.Fprintf(out, "\n## Handshakes\n\n%d connections opened as fast as %d parallel dialers can, from 16 loopback "+
		"source addresses, each kept open until the end. Latency: TCP dial start to the 101 response read "+
		"(for tcp: to the dial returning). wsproxy connections join groups of 2; wsproxy-jwt is wsproxy with "+
		"--auth=jwt, each connection with its own HS256 token in ?token= (minted before the run; the id comes "+
		"from the token). NATS connections are counted at the 101, before any NATS protocol.\n\n", n, workers)
	fmt.Fprintf(out, "| system | connections | per second | p50 | p99 | max | server CPU s | failures |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, name := range b.systems("wsproxy", "wsproxy-jwt", "nats", "ws", "tcp") {
		var srv *server
		var err error
		if name == "wsproxy-jwt" {
			srv, err = b.startJWTProxy(n)
		} else {
			srv, err = b.startAny(name)
		}
		if err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		logf(b.log, "handshakes %s: %d", srv.name, n)
		var prof <-chan error
		if path := b.profilePath("handshakes.pprof"); path != "" && srv.pprof != "" {
			prof = profileCPU(srv, 2*time.Second, path)
			time.Sleep(50 * time.Millisecond)
		}
		c0 := srv.cpu()
		conns, r := openConns(b.ctx, srv, n, workers, 2, false)
		cpu := srv.cpu() - c0
		if prof != nil {
			if err := <-prof; err != nil {
				return err
			}
		}
		closeAll(conns)
		srv.stop()
		sortInt64(r.lat)
		p99 := percentile(r.lat, 99)
		fmt.Fprintf(out, "| %s | %d | %s | %s | %s | %s | %.2f | %d |\n", srv.name, n, count(r.rate()),
			ms(percentile(r.lat, 50)), ms(p99), ms(percentile(r.lat, 100)), cpu.Seconds(), r.failures)
		if name == "wsproxy" {
			b.judge("handshakes", ">= 10k/s, p99 < 20 ms", r.rate() >= 10000 && p99 < 20*time.Millisecond && r.failures == 0,
				"%s/s, p99 %s, %d failures", count(r.rate()), ms(p99), r.failures)
		}
		if r.failures > 0 {
			fmt.Fprintf(out, "\n%s: first failure: %v\n\n", srv.name, r.firstErr)
		}
	}
	return nil
}

// jwtTokens are the tokens of the wsproxy-jwt handshakes: the i-th is for
// member m<i> of group g<i/2>. Set before the connections are opened.
var jwtTokens []string

// startJWTProxy runs wsproxy with --auth=jwt and mints n tokens for it.
func (b *bench) startJWTProxy(n int) (*server, error) {
	secret := []byte("proxybench-secret-0123456789abcdef0123456789")
	path := filepath.Join(b.bins.dir, "jwt-secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return nil, err
	}
	jwtTokens = make([]string, n)
	for i := range jwtTokens {
		tok, err := auth.Mint(secret, "m"+strconv.Itoa(i), []string{"g" + strconv.Itoa(i/2)}, time.Hour, "", "")
		if err != nil {
			return nil, err
		}
		jwtTokens[i] = tok
	}
	srv, err := startProxy(b.bins, b.bins.dir, "--auth=jwt", "--jwt-secret-file", path)
	if err != nil {
		return nil, err
	}
	srv.name = "wsproxy-jwt"
	return srv, nil
}

func (b *bench) blob(out *strings.Builder) error {
	p := b.p
	fmt.Fprintf(out, "\n## Large messages\n\nOne binary message from one member to the others of its group, through a "+
		"fresh proxy each time (default --buffer-bytes 1 MiB, so it is streamed through the ring). Throughput: "+
		"message bytes delivered per second, summed over receivers, from the first write to the last receiver "+
		"holding (and having checked) every byte. The direct-ws baseline sends the same message the same way "+
		"over as many connections as there are receivers, straight to a sink; tcp writes the same bytes on raw "+
		"sockets. NATS is not run: its max_payload is capped at 64 MiB.\n\n")
	fmt.Fprintf(out, "| message | system | throughput | vs direct-ws | server CPU s | RSS before | peak RSS (VmHWM) |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	ws, err := startSink(b.bins, b.bins.dir, "ws")
	if err != nil {
		return err
	}
	defer ws.stop()
	tcp, err := startSink(b.bins, b.bins.dir, "tcp")
	if err != nil {
		return err
	}
	defer tcp.stop()
	type blobCase struct {
		size      int64
		receivers int
		frag      int
	}
	var cases []blobCase
	for _, s := range p.blobSizes {
		cases = append(cases, blobCase{s, 1, 0})
	}
	cases = append(cases, blobCase{p.blobSizes[len(p.blobSizes)-1], 1, 64 << 10}, blobCase{p.blobFanSize, 9, 0})
	var hwms []int64
	var blob []byte
	for _, c := range cases {
		if int64(len(blob)) < c.size {
			blob = nil
			runtime.GC()
			blob = newBlob(c.size)
		}
		msg := blob[:c.size]
		desc := fmt.Sprintf("%s 1->%d, ", sizeName(c.size), c.receivers)
		if c.frag == 0 {
			desc += "one frame"
		} else {
			desc += sizeName(int64(c.frag)) + " fragments"
		}
		logf(b.log, "blob %s", desc)
		pr, err := runBlobProxy(b.ctx, b.bins, b.bins.dir, msg, c.receivers, c.frag)
		if err != nil {
			return fmt.Errorf("wsproxy %s: %w", desc, err)
		}
		dr, err := runBlobDirect(b.ctx, ws, msg, c.receivers, c.frag)
		if err != nil {
			return fmt.Errorf("direct-ws %s: %w", desc, err)
		}
		rows := []blobResult{pr, dr}
		if c.frag == 0 {
			tr, err := runBlobDirect(b.ctx, tcp, msg, c.receivers, 0)
			if err != nil {
				return fmt.Errorf("tcp %s: %w", desc, err)
			}
			rows = append(rows, tr)
		}
		for _, r := range rows {
			hwm := "-"
			before := "-"
			if r.system == "wsproxy" {
				hwm, before = mib(r.after.HWM), mib(r.before.RSS)
			}
			fmt.Fprintf(out, "| %s | %s | %s/s | %s | %.2f | %s | %s |\n", desc, r.system, mib(int64(r.throughput())),
				ratio(r.throughput(), dr.throughput()), r.cpu.Seconds(), before, hwm)
		}
		hwms = append(hwms, pr.after.HWM)
		share := pr.throughput() / dr.throughput()
		b.judge("blob "+desc, ">= 60 % of direct-ws throughput; VmHWM <= 32 MiB", share >= 0.6 && pr.after.HWM <= 32<<20,
			"%.0f %% of direct-ws; VmHWM %s", 100*share, mib(pr.after.HWM))
	}
	lo, hi := hwms[0], hwms[0]
	for _, h := range hwms {
		lo, hi = min(lo, h), max(hi, h)
	}
	flat := float64(hi-lo) <= 0.25*float64(lo)
	b.judge("blob", "peak RSS flat in message size", flat, "VmHWM %s to %s over %s to %s messages",
		mib(lo), mib(hi), sizeName(p.blobSizes[0]), sizeName(p.blobSizes[len(p.blobSizes)-1]))
	return nil
}

func (b *bench) slow(out *strings.Builder) error {
	p := b.p
	const receivers, size, rate = 10, 16 << 10, 500.0
	fmt.Fprintf(out, "\n## Slow consumer\n\nOne group: a sender at %.0f messages/s of %s (open loop) and %d receivers, "+
		"one of which never reads its socket. wsproxy runs with --slow-consumer=disconnect (queue budget "+
		"--send-queue-bytes 8 MiB per receiver); NATS with its defaults. Over %v. Share: messages a healthy receiver "+
		"got / messages sent; the window figure is the lowest share in any whole one-second window of arrival time.\n\n",
		rate, sizeName(size), receivers, p.slowDur)
	fmt.Fprintf(out, "| system | sent | lowest share, whole run | lowest share, 1 s window | gaps | slow consumers closed | RSS before | peak RSS (VmHWM) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, name := range b.systems("wsproxy", "nats") {
		var srv *server
		var sys system
		var err error
		if name == "wsproxy" {
			srv, err = startProxy(b.bins, b.bins.dir, "--slow-consumer", "disconnect")
			sys = wsproxySystem{}
			if srv != nil {
				sys = wsproxySystem{srv.addr}
			}
		} else {
			srv, sys, err = b.startSystem(name)
		}
		if err != nil {
			return err
		}
		logf(b.log, "slow consumer %s", name)
		r, err := runSlow(b.ctx, name, sys, srv, receivers, size, rate, p.slowDur)
		srv.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(out, "| %s | %d | %.1f %% | %.1f %% | %d | %.0f | %s | %s |\n", name, r.sent, 100*r.minShare, 100*r.minWindow,
			r.gaps, r.evicted, mib(r.before.RSS), mib(r.after.HWM))
		if name == "wsproxy" {
			growth := r.after.HWM - r.before.RSS
			budget := int64(receivers) * (8 << 20)
			ok := r.minWindow >= 0.9 && r.gaps == 0 && r.evicted >= 1 && growth <= budget
			b.judge("slow consumer", ">= 90 % rate, no gaps, memory within queue budgets", ok,
				"lowest 1 s window %.1f %%, %d gaps, %.0f evicted, peak RSS growth %s (one queue: 8 MiB; all: %s)",
				100*r.minWindow, r.gaps, r.evicted, mib(growth), mib(budget))
		}
	}
	return nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+(\d+)\s+(.*)$`)

func (b *bench) micro(out *strings.Builder) error {
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkFanOut", "-benchmem", "-benchtime", b.p.benchtime, "-count", "1", "./internal/forward/"}
	fmt.Fprintf(out, "\n## Micro: one inbound message fanned out\n\n`go %s`: a real forward.Server behind httptest, one "+
		"sender and N receivers whose clients are raw sockets that allocate nothing per message (pre-masked "+
		"frames out, counted bytes in), so every allocation counted is the server's. allocs/msg is per inbound "+
		"message; allocs/delivery is allocs/msg divided by receivers.\n\n", strings.Join(args, " "))
	cmd := exec.CommandContext(b.ctx, "go", args...)
	cmd.Dir = b.root
	cmd.Stderr = b.log
	raw, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, raw)
	}
	fmt.Fprintf(out, "| benchmark | iterations | results |\n| --- | ---: | --- |\n")
	worst := -1.0
	for _, line := range strings.Split(string(raw), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		fmt.Fprintf(out, "| %s | %s | %s |\n", m[1], m[2], strings.Join(strings.Fields(m[3]), " "))
		f := strings.Fields(m[3])
		for i := 1; i < len(f); i++ {
			if f[i] == "allocs/msg" {
				if v, err := strconv.ParseFloat(f[i-1], 64); err == nil {
					worst = max(worst, v)
				}
			}
		}
	}
	b.judge("micro", "<= 1 allocation per inbound message, 0 per delivery", worst >= 0 && worst <= 1,
		"worst %.2f allocs per inbound message over every size and receiver count", worst)
	return nil
}

func (b *bench) targetsTable() string {
	var s strings.Builder
	s.WriteString("\n## Targets\n\n| workload | target | measured | met |\n| --- | --- | --- | --- |\n")
	for _, t := range b.targets {
		met := "**not met**"
		if t.met {
			met = "met"
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", t.workload, t.goal, t.figure, met)
	}
	return s.String()
}

// machineHeader describes where and what was measured.
func machineHeader(root string, args []string) string {
	var s strings.Builder
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
					mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
				}
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	commit := "unknown"
	if o, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(o))
		if o, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(o) > 0 {
			commit += " (with uncommitted changes)"
		}
	}
	gover := runtime.Version()
	if o, err := exec.Command("go", "version").Output(); err == nil {
		gover = strings.TrimSpace(string(o))
	}
	fmt.Fprintf(&s, "# proxybench run\n\n")
	fmt.Fprintf(&s, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&s, "- machine: %d CPUs (nproc), %s%s, Linux %s\n", runtime.NumCPU(), cpu, mem, kernel)
	fmt.Fprintf(&s, "- %s\n", gover)
	fmt.Fprintf(&s, "- commit: %s\n", commit)
	fmt.Fprintf(&s, "- command: `go run ./cmd/proxybench %s`\n", strings.Join(args, " "))
	fmt.Fprintf(&s, "- load generator, servers and baselines share the machine; servers run as separate processes\n")
	return s.String()
}

func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
