// Package proxytest runs a real wsproxy forwarder in-process for the tests of
// the packages that talk to one (the client package, the CLI). It is the
// proxy's own /ws and /ws/events handlers behind an httptest server on a free
// loopback port, with the SPEC defaults and short timeouts.
package proxytest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/metrics"
)

// Options are the forwarding settings the tests use: SPEC section 7's
// defaults with short timeouts and no pings.
func Options() forward.Options {
	return forward.Options{
		BufferBytes:        1 << 20,
		MessageIdleTimeout: 10 * time.Second,
		SendQueueBytes:     8 << 20,
		WriteTimeout:       10 * time.Second,
		PingTimeout:        time.Second,
		CloseGrace:         time.Second,
	}
}

// Proxy is one running forwarder. Restart swaps in a fresh one behind the
// same address, as a restarted proxy process would be.
type Proxy struct {
	URL  string // ws://127.0.0.1:port/ws
	HTTP string // http://127.0.0.1:port

	opts forward.Options
	hs   *httptest.Server

	mu  sync.Mutex
	cur *forward.Server
}

// Start runs a proxy until the test ends. mod changes the options.
func Start(t testing.TB, mod ...func(*forward.Options)) *Proxy {
	t.Helper()
	p := New(mod...)
	t.Cleanup(p.Close)
	return p
}

// New runs a proxy until Close (for examples, which have no testing.TB).
func New(mod ...func(*forward.Options)) *Proxy {
	opts := Options()
	for _, f := range mod {
		f(&opts)
	}
	p := &Proxy{opts: opts}
	p.cur = p.newServer()
	p.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws/events" {
			p.Server().Events().ServeHTTP(w, r)
			return
		}
		if r.URL.Path != "/ws" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"not found"}`))
			return
		}
		p.Server().ServeHTTP(w, r)
	}))
	p.HTTP = p.hs.URL
	p.URL = "ws" + strings.TrimPrefix(p.hs.URL, "http") + "/ws"
	return p
}

// Close shuts the proxy down: members are closed with 1001 going away.
func (p *Proxy) Close() {
	p.shutdown(p.Server())
	p.hs.Close()
}

func (p *Proxy) newServer() *forward.Server {
	return forward.NewServer(p.opts, zerolog.Nop(), metrics.New())
}

// Server is the forwarder serving new connections.
func (p *Proxy) Server() *forward.Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Restart shuts the current forwarder down gracefully (its members are
// closed with 1001 going away) after a fresh one has taken over new
// connections on the same address.
func (p *Proxy) Restart() {
	p.mu.Lock()
	old := p.cur
	p.cur = p.newServer()
	p.mu.Unlock()
	p.shutdown(old)
}

func (p *Proxy) shutdown(s *forward.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.Shutdown(ctx)
}

// DialURL is the URL a member id of group connects to.
func (p *Proxy) DialURL(id, group string) string {
	return p.URL + "?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
}

// IsMember reports whether id is connected in group now.
func (p *Proxy) IsMember(group, id string) bool {
	return p.Server().Registry().Member(group, id) != nil
}

// WaitMember waits (up to 20 s) until id is a member of group, so that a
// message sent next is sure to reach it.
func (p *Proxy) WaitMember(t testing.TB, group, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !p.IsMember(group, id) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never joined %s", id, group)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitGone waits (up to 20 s) until id is no longer a member of group.
func (p *Proxy) WaitGone(t testing.TB, group, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.IsMember(group, id) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never left %s", id, group)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
