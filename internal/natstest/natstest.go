// Package natstest runs a real nats-server inside a test process: loopback
// only, a random port, JetStream enabled, stopped when the test ends. A test
// can stop the server and start a new one on the same port, as an operator
// restarting NATS would, to see how its clients survive.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startTimeout bounds each start: how long a port still held by someone
// else is retried, and how long a started server may take to listen.
const startTimeout = 10 * time.Second

// An Option changes the server's configuration, for its first start and for
// every Restart.
type Option func(*server.Options)

// MaxPayload sets the largest message the server accepts (its max_payload;
// the server's default is 1 MiB).
func MaxPayload(n int32) Option {
	return func(o *server.Options) { o.MaxPayload = n }
}

// PingInterval makes the server ping each client every d and close a client
// that leaves maxOut pings unanswered (the server's defaults: 2 minutes, 2).
func PingInterval(d time.Duration, maxOut int) Option {
	return func(o *server.Options) {
		o.PingInterval = d
		o.MaxPingsOut = maxOut
	}
}

// MaxPending sets how many bytes the server queues for one client before it
// closes that client as a slow consumer (the server's default is 64 MiB).
func MaxPending(n int64) Option {
	return func(o *server.Options) { o.MaxPending = n }
}

// Server is one nats-server, or the succession of them that Restart makes,
// all on one address. Its methods may be called concurrently, but Start and
// Restart fail the test with t.Fatal and so belong on the test's goroutine.
type Server struct {
	// Static after Start.
	t        testing.TB
	opts     []Option
	storeDir string
	port     int // fixed by the first start

	// In a cluster (StartCluster): this server's name, its route port
	// (fixed by the first start) and the routes it dials.
	name        string
	clusterPort int
	routes      []*url.URL

	// Guarded by mu.
	mu  sync.Mutex
	srv *server.Server // the latest server, running or stopped
}

// Start runs a nats-server on 127.0.0.1 at a random port, with JetStream
// enabled (its store directory under t.TempDir()), without logging or signal
// handlers, and returns once the server accepts connections. It fails the
// test if the server cannot start within 10 s. When the test ends, the server
// is shut down and waited for.
//
// JetStream keeps nothing across a Restart for streams in memory storage,
// which is what a memory-storage KV bucket is: see Restart.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, opts: opts, storeDir: t.TempDir(), port: server.RANDOM_PORT}
	srv, err := s.start()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s.port = srv.Addr().(*net.TCPAddr).Port
	s.srv = srv
	t.Cleanup(s.Stop)
	return s
}

// URL is the address for a NATS client, nats://127.0.0.1:port. It stays the
// same across Restart.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Addr is the server's host:port, the same across Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Server is the nats-server running now, or the last one if it is stopped.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Stop shuts the server down and returns once it has ended: its clients'
// connections are closed and its port is free. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Restart stops the server if it runs, then starts a new one on the same
// port with the same options and the same store directory, and returns once
// it accepts connections; clients that reconnect to URL find it there. If the
// port is still held (by a closing socket, or anything else), Restart retries
// for up to 10 s before it fails the test.
//
// The new server's JetStream starts from the store directory: streams and KV
// buckets in memory storage are gone, and a client must create them again;
// file-storage ones would survive.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	srv, err := s.start()
	if err != nil {
		s.t.Fatalf("natstest: restart: %v", err)
	}
	s.srv = srv
}

// start starts a server on s.port and waits until it accepts connections,
// retrying while the port cannot be listened on.
func (s *Server) start() (*server.Server, error) {
	deadline := time.Now().Add(startTimeout)
	for {
		srv, err := server.NewServer(s.options())
		if err != nil {
			return nil, fmt.Errorf("configure server: %w", err)
		}
		// Start returns once the client listener is set up, or failed.
		srv.Start()
		if !srv.JetStreamEnabled() {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("JetStream did not start (store %s)", s.storeDir)
		}
		if srv.Addr() != nil {
			if !srv.ReadyForConnections(time.Until(deadline)) {
				srv.Shutdown()
				srv.WaitForShutdown()
				return nil, fmt.Errorf("server on port %d not ready within %v", s.port, startTimeout)
			}
			return srv, nil
		}
		// The listen failed: with logging off, the server says nothing.
		srv.Shutdown()
		srv.WaitForShutdown()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cannot listen on 127.0.0.1:%d for %v", s.port, startTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// options is a fresh configuration: the server keeps and changes the one it
// is given, so each start needs its own.
func (s *Server) options() *server.Options {
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  s.storeDir,
	}
	if s.name != "" {
		o.ServerName = s.name
		o.Cluster = server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: s.clusterPort}
		o.Routes = s.routes
	}
	for _, opt := range s.opts {
		opt(o)
	}
	return o
}

// StartCluster starts n servers (n >= 3) clustered with JetStream, as
// NATS is run for high availability: each on its own client port, route
// port and store, with routes to all the others. It returns once JetStream
// has a leader and every server is current. Each server can be stopped and
// restarted on its own.
func StartCluster(t testing.TB, n int, opts ...Option) []*Server {
	t.Helper()
	// A clustered JetStream server needs its routes from the start, so the
	// route ports are picked before any server starts.
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	out := make([]*Server, n)
	for i := range out {
		var routes []*url.URL
		for j, p := range ports {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
			}
		}
		out[i] = &Server{t: t, opts: opts, storeDir: t.TempDir(), port: server.RANDOM_PORT,
			name: fmt.Sprintf("s%d", i), clusterPort: ports[i], routes: routes}
	}
	// Started together: a JetStream server waits for its peers' routes.
	errs := make(chan error, n)
	for _, s := range out {
		go func() {
			srv, err := s.start()
			if err == nil {
				s.mu.Lock()
				s.port, s.srv = srv.Addr().(*net.TCPAddr).Port, srv
				s.mu.Unlock()
			}
			errs <- err
		}()
	}
	var failed error
	for range out {
		if err := <-errs; err != nil {
			failed = err
		}
	}
	for _, s := range out {
		if s.srv != nil {
			t.Cleanup(s.Stop)
		}
	}
	if failed != nil {
		t.Fatalf("natstest: cluster: %v", failed)
	}
	AwaitCluster(t, out)
	return out
}

// AwaitCluster waits until JetStream has a leader among ss and every one
// of them is current with it (after a Restart, say), for at most 30s.
func AwaitCluster(t testing.TB, ss []*Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !clusterReady(ss) {
		if time.Now().After(deadline) {
			t.Fatalf("natstest: the JetStream cluster did not form in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterReady reports whether JetStream has a leader among ss, every one
// of them is current with it, and the leader can place replicas on all.
func clusterReady(ss []*Server) bool {
	leader := false
	for _, s := range ss {
		srv := s.Server()
		if !srv.JetStreamIsCurrent() {
			return false
		}
		if srv.JetStreamIsLeader() {
			leader = len(srv.JetStreamClusterPeers()) == len(ss)
		}
	}
	return leader
}

// AwaitStream waits until stream (of the default account) has a leader
// among ss and its replica on every one of them is current, for at most
// 30s: only then does it survive the loss of any one server. A test that
// stops a server right after creating a stream waits for this first.
func AwaitStream(t testing.TB, ss []*Server, stream string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, current := false, true
		for _, s := range ss {
			srv := s.Server()
			leader = leader || srv.JetStreamIsStreamLeader("$G", stream)
			current = current && srv.JetStreamIsStreamCurrent("$G", stream)
		}
		if leader && current {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: stream %s has no leader or a replica behind after 30s", stream)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
