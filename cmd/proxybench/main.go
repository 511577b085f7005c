// Command proxybench measures wsproxy side by side with NATS over WebSocket
// and with two baselines that have no relay in them: a raw loopback TCP copy
// and a direct WebSocket stream (coder/websocket client to coder/websocket
// server). It builds the proxy and a nats-server into a temporary directory,
// runs each as a subprocess on 127.0.0.1 (so /proc/<pid>/stat counts the
// server's CPU alone), runs each workload against each, and prints one
// markdown table per workload followed by the targets, met or not.
//
// The cluster workloads (cluster-fanout, cluster-blob) run three proxies as a
// cluster over one nats-server with JetStream, next to the same workload on
// one proxy.
//
//	go run ./cmd/proxybench            # full run, under ten minutes
//	go run ./cmd/proxybench -quick     # smaller versions, under a minute
//	go run ./cmd/proxybench -only fanout,blob
//	go run ./cmd/proxybench -quick -only cluster-fanout,cluster-blob
//
// Load only ever targets 127.0.0.0/8 and every loop is bounded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sink" {
		if err := runSink(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "proxybench sink:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

// params are the sizes of one run.
type params struct {
	quick                 bool
	fanWarmup, fanMeasure time.Duration
	latMeasure            time.Duration
	latMeasureLow         time.Duration // for the fractions below one half
	latFractions          []float64     // of the fan-out maximum; 0.5 is the target's
	idleConns             int
	idleSettle            time.Duration
	handshakes            int
	blobSizes             []int64 // 1->1, one frame; the last is also sent in fragments
	blobFanSize           int64   // 1->9
	slowDur               time.Duration
	benchtime             string
	clusterBlobSizes      []int64 // 1->2 across nodes
	// hostile: issue 9's memory scenarios.
	hostileGroups, hostileHolders int
	hostileDur                    time.Duration
}

func fullParams() params {
	return params{
		fanWarmup: time.Second, fanMeasure: 5 * time.Second,
		latMeasure: 8 * time.Second, latMeasureLow: 4 * time.Second,
		latFractions: []float64{0.5, 0.1, 0.02},
		idleConns:    10000, idleSettle: 3 * time.Second, handshakes: 10000,
		blobSizes:     []int64{64 << 20, 1 << 30},
		blobFanSize:   256 << 20,
		slowDur:       10 * time.Second,
		benchtime:     "2s",
		hostileGroups: 50, hostileHolders: 200, hostileDur: 15 * time.Second,
		clusterBlobSizes: []int64{256 << 20, 1 << 30},
	}
}

func quickParams() params {
	return params{
		quick:     true,
		fanWarmup: 300 * time.Millisecond, fanMeasure: time.Second,
		latMeasure: 1500 * time.Millisecond, latMeasureLow: time.Second,
		latFractions: []float64{0.5, 0.1},
		idleConns:    1000, idleSettle: time.Second, handshakes: 2000,
		blobSizes:     []int64{16 << 20, 64 << 20},
		blobFanSize:   32 << 20,
		slowDur:       3 * time.Second,
		benchtime:     "20000x",
		hostileGroups: 50, hostileHolders: 200, hostileDur: 5 * time.Second,
		clusterBlobSizes: []int64{64 << 20, 256 << 20},
	}
}

var allWorkloads = []string{"fanout", "latency", "idle", "handshakes", "blob", "slow", "hostile", "micro", "cluster-fanout", "cluster-blob"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smaller, shorter versions of every workload (under a minute)")
	only := fs.String("only", "", "comma-separated workloads to run: "+strings.Join(allWorkloads, ","))
	keepLogs := fs.Bool("keep-logs", false, "keep the servers' logs (their directory is printed)")
	pprofDir := fs.String("pprof", "", "directory for CPU profiles of the proxy during the fan-out and latency runs (turns on its WSPROXY_PPROF_ADDR listener)")
	proxyArgs := fs.String("proxy-args", "", "extra flags for every wsproxy the benchmark starts, space-separated (e.g. to turn limits on)")
	proxyOnly := fs.Bool("proxy-only", false, "run wsproxy alone: no NATS and no baselines except where a target needs one")
	watchers := fs.Int("watchers-per-group", 0, "fan-out: this many presence watchers (/ws/events) on each wsproxy group, reading every event")
	if err := fs.Parse(args); err != nil {
		return err
	}
	proxyExtra = strings.Fields(*proxyArgs)
	watchersPerGroup = *watchers
	p := fullParams()
	if *quick {
		p = quickParams()
	}
	if p.idleSettle <= 0 {
		return errors.New("idle settle time not set")
	}
	want := map[string]bool{}
	for _, w := range strings.Split(*only, ",") {
		if w = strings.TrimSpace(w); w != "" {
			want[w] = true
		}
	}
	for w := range want {
		if !contains(allWorkloads, w) {
			return fmt.Errorf("unknown workload %q", w)
		}
	}
	enabled := func(w string) bool { return len(want) == 0 || want[w] }

	// Each process (this one, and a server, which inherits the limit) holds
	// one end of every connection.
	need := uint64(max(p.idleConns, p.handshakes) + 1000)
	if lim, err := raiseFileLimit(1 << 16); lim < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d (%v); need %d", lim, err, need)
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	logf(stderr, "building the proxy and nats-server")
	bins, err := buildBinaries(ctx, root)
	if err != nil {
		return err
	}
	if *keepLogs {
		logf(stderr, "logs in %s", bins.dir)
	} else {
		defer os.RemoveAll(bins.dir)
	}

	b := &bench{ctx: ctx, p: p, bins: bins, root: root, log: stderr, proxyOnly: *proxyOnly, pprofDir: *pprofDir}
	if *pprofDir != "" {
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			return err
		}
		pprofEnabled = true
	}
	var out strings.Builder
	out.WriteString(machineHeader(root, args))
	steps := []struct {
		name string
		f    func(*strings.Builder) error
	}{
		{"fanout", b.fanout},
		{"latency", b.latency},
		{"idle", b.idle},
		{"handshakes", b.handshakes},
		{"blob", b.blob},
		{"slow", b.slow},
		{"hostile", b.hostile},
		{"micro", b.micro},
		{"cluster-fanout", b.clusterFanout},
		{"cluster-blob", b.clusterBlob},
	}
	for _, st := range steps {
		if !enabled(st.name) {
			continue
		}
		if st.name == "latency" && !enabled("fanout") {
			// The latency rate is half of the fan-out maximum: measure it.
			if err := b.fanout(&strings.Builder{}); err != nil {
				return err
			}
		}
		logf(stderr, "workload %s", st.name)
		t0 := time.Now()
		if err := st.f(&out); err != nil {
			// What was measured before the failure still counts.
			fmt.Fprintf(&out, "\n**Workload %s failed; the run stopped here.**\n", st.name)
			out.WriteString(b.targetsTable())
			_, _ = io.WriteString(stdout, out.String())
			return fmt.Errorf("%s: %w", st.name, err)
		}
		logf(stderr, "workload %s done in %v", st.name, time.Since(t0).Round(time.Second))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if p.quick {
		out.WriteString("\n(A quick run: smaller, shorter versions of each workload, e.g. 1000 idle connections where the\n" +
			"target is stated for 10000. Judge the targets on a full run, `make bench`.)\n")
	}
	out.WriteString(b.targetsTable())
	_, err = io.WriteString(stdout, out.String())
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%s proxybench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
