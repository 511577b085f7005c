package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// proc is the whole program, run in-process by run() as main does.
type proc struct {
	base   string       // http://127.0.0.1:port (https:// with TLS)
	client *http.Client // for base (with TLS: one that skips verification)

	mu  sync.Mutex
	log []string // stderr lines

	stopOnce sync.Once
	stopFn   func()
}

// startProc runs the proxy with args (on a free loopback port, JSON logs, no
// environment) and waits until /readyz answers 200. When the test ends it
// cancels run's context as a signal would and checks that run returns nil.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	p := &proc{}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			var l struct {
				Message, Addr string
				TLS           bool
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "proxy listening" {
				if l.TLS {
					// Tests that check the certificate use their own client.
					p.client = &http.Client{Transport: &http.Transport{
						TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
					l.Addr = "https://" + l.Addr
				}
				addr <- l.Addr
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	args = append([]string{"--addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-timeout", "2s"}, args...)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, func(string) string { return "" }, io.Discard, pw)
		pw.Close()
	}()
	p.stopFn = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return after cancel")
		}
		<-scanned
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.logText())
		}
	}
	t.Cleanup(p.stop)

	select {
	case a := <-addr:
		p.base = a
		if !strings.HasPrefix(a, "https://") {
			p.base = "http://" + a
			p.client = http.DefaultClient
		}
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not start")
	}
	waitFor(t, 10*time.Second, "/readyz to answer 200", func() bool {
		resp, err := p.client.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// stop shuts the proxy down as SIGTERM does and waits for run to return.
func (p *proc) stop() { p.stopOnce.Do(p.stopFn) }

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

// addr is the proxy's host:port.
func (p *proc) addr() string { return p.base[strings.Index(p.base, "//")+2:] }

// ws is the proxy's WebSocket URL base.
func (p *proc) ws() string { return "ws" + strings.TrimPrefix(p.base, "http") + "/ws" }

// api sends an admin API request with the token and returns the status and body.
func (p *proc) api(t testing.TB, method, path, token, contentType string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
