//go:build cluster

package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Timings the test gives the cluster through docker-compose.cluster.yml's
// variables: short, so that a lost peer is noticed in seconds.
const (
	heartbeat    = 250 * time.Millisecond
	peerTimeout  = 2 * time.Second
	natsPing     = 2 * time.Second
	healthPeriod = time.Second
)

// stack is the compose project: NATS and proxy1..3.
type stack struct {
	command []string // "docker-compose" or "docker compose"
	file    string
	project string
	env     []string

	nats  string  // container name
	bus   string  // network name: the one NATS is on
	nodes []*node // proxy1, proxy2, proxy3
}

// node is one proxy container.
type node struct {
	service   string // "proxy1"
	container string // its container's name, as docker names it
	addr      string // host:port published on the loopback address
}

// newStack starts the project and waits until NATS and every proxy are
// healthy and every proxy is ready. When the test ends the project is taken
// down, its logs shown first if the test failed.
func newStack(t *testing.T) *stack {
	t.Helper()
	file, err := filepath.Abs("../../docker-compose.cluster.yml")
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{
		command: strings.Fields(os.Getenv("COMPOSE")),
		file:    file,
		project: os.Getenv("WSPROXY_CLUSTER_PROJECT"),
		env: append(os.Environ(),
			"WSPROXY_HOST_IP=127.0.0.1",
			// Docker picks free ports; each is looked up with `compose port`.
			"WSPROXY_CLUSTER_PORT1=0",
			"WSPROXY_CLUSTER_PORT2=0",
			"WSPROXY_CLUSTER_PORT3=0",
			"WSPROXY_CLUSTER_NAME=clustertest",
			"WSPROXY_CLUSTER_HEARTBEAT="+heartbeat.String(),
			"WSPROXY_CLUSTER_PEER_TIMEOUT="+peerTimeout.String(),
			"WSPROXY_NATS_PING_INTERVAL="+natsPing.String(),
			"WSPROXY_HEALTHCHECK_INTERVAL="+healthPeriod.String(),
		),
	}
	if len(st.command) == 0 {
		st.command = []string{"docker-compose"}
	}
	if st.project == "" {
		st.project = fmt.Sprintf("wsproxy-cluster-test-%d-%d", rand.IntN(1e6), os.Getpid())
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := st.run(time.Minute, "logs", "--no-color", "--tail", "300"); err == nil {
				t.Logf("logs of the project (last 300 lines of each container):\n%s", out)
			}
		}
		if out, err := st.run(2*time.Minute, "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	st.compose(t, 3*time.Minute, "up", "--detach", "--no-build")

	st.nats = st.containerName(t, "nats")
	for _, svc := range []string{"proxy1", "proxy2", "proxy3"} {
		st.nodes = append(st.nodes, &node{service: svc, container: st.containerName(t, svc)})
	}
	st.checkNetworks(t)
	st.waitHealthy(t, st.nats, time.Minute)
	for _, n := range st.nodes {
		st.waitHealthy(t, n.container, time.Minute)
		st.lookUpPort(t, n)
	}
	st.waitReady(t, time.Minute, st.nodes...)
	t.Logf("project %s up in %v: nats %s on network %s; %s", st.project, time.Since(start).Round(time.Millisecond), st.nats, st.bus, st.describe())
	return st
}

func (st *stack) describe() string {
	var parts []string
	for _, n := range st.nodes {
		parts = append(parts, fmt.Sprintf("%s %s on %s", n.service, n.container, n.addr))
	}
	return strings.Join(parts, ", ")
}

// containerName is the name docker gives the service's one container
// ("<project>_proxy2_1" for docker-compose 1, "<project>-proxy2-1" for the
// plugin): asked, never guessed.
func (st *stack) containerName(t *testing.T, service string) string {
	t.Helper()
	id := strings.TrimSpace(st.compose(t, 30*time.Second, "ps", "-q", service))
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("compose ps -q %s: %q, want one container", service, id)
	}
	return strings.TrimPrefix(strings.TrimSpace(docker(t, 30*time.Second, "inspect", "--format", "{{.Name}}", id)), "/")
}

// checkNetworks finds the bus network (the only one NATS is on) and checks
// the layout the compose file promises: the bus is internal, NATS publishes
// nothing on the host, both images run as 65532, and every proxy is on the
// bus and on one other network (front).
func (st *stack) checkNetworks(t *testing.T) {
	t.Helper()
	nets := networks(t, st.nats)
	if len(nets) != 1 {
		t.Fatalf("nats is on networks %v, want only the bus", nets)
	}
	st.bus = nets[0]
	if internal := strings.TrimSpace(docker(t, 30*time.Second, "network", "inspect", "--format", "{{.Internal}}", st.bus)); internal != "true" {
		t.Errorf("network %s: internal %s, want true", st.bus, internal)
	}
	if ports := strings.TrimSpace(docker(t, 30*time.Second, "port", st.nats)); ports != "" {
		t.Errorf("nats publishes ports on the host: %q, want none", ports)
	}
	for _, c := range []string{st.nats, st.nodes[0].container} {
		if user := strings.TrimSpace(docker(t, 30*time.Second, "inspect", "--format", "{{.Config.User}}", c)); user != "65532:65532" {
			t.Errorf("%s runs as user %q, want 65532:65532", c, user)
		}
	}
	for _, n := range st.nodes {
		nets := networks(t, n.container)
		if len(nets) != 2 || (nets[0] != st.bus && nets[1] != st.bus) {
			t.Errorf("%s is on networks %v, want %s and one other (front)", n.container, nets, st.bus)
		}
	}
}

func networks(t *testing.T, container string) []string {
	t.Helper()
	out := docker(t, 30*time.Second, "inspect", "--format", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}", container)
	return strings.Fields(out)
}

// lookUpPort sets n.addr from the port Docker published; it changes when the
// container is started again.
func (st *stack) lookUpPort(t *testing.T, n *node) {
	t.Helper()
	addr := strings.TrimSpace(st.compose(t, 30*time.Second, "port", n.service, "8080"))
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("compose port %s 8080: %q, want 127.0.0.1:<port>", n.service, addr)
	}
	n.addr = addr
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
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// docker runs a docker command and returns its stdout; it fails the test if
// the command fails or takes longer than timeout.
func docker(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// waitHealthy waits for the container's health check to pass; it fails at
// once if the container turns unhealthy or stops.
func (st *stack) waitHealthy(t *testing.T, container string, timeout time.Duration) {
	t.Helper()
	var state string
	eventually(t, timeout, func() bool {
		state = strings.TrimSpace(docker(t, 30*time.Second, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container))
		switch state {
		case "running healthy":
			return true
		case "running starting":
			return false
		}
		t.Fatalf("%s: state %q while waiting for healthy", container, state)
		return false
	}, func() string { return fmt.Sprintf("%s not healthy (state %q)", container, state) })
}

// waitReady waits until every node's /readyz answers 200.
func (st *stack) waitReady(t *testing.T, timeout time.Duration, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		var last int
		eventually(t, timeout, func() bool {
			last = n.readyz()
			return last == http.StatusOK
		}, func() string { return fmt.Sprintf("%s /readyz %d, want 200", n.service, last) })
	}
}

var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// readyz is the node's /readyz status code, or 0 if it did not answer.
func (n *node) readyz() int {
	resp, err := probe.Get("http://" + n.addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// clusterMetrics is the node's wsproxy_bus_* and wsproxy_registry_* lines of
// /metrics, for a failure's report.
func (n *node) clusterMetrics() string {
	resp, err := probe.Get("http://" + n.addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "wsproxy_bus_") || strings.HasPrefix(l, "wsproxy_registry_ops") {
			b.WriteString("\t" + l + "\n")
		}
	}
	return b.String()
}

// eventually polls cond every 50 ms until it holds; after timeout it fails
// the test with what() says.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
