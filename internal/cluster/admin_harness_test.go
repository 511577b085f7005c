package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/api"
)

// adminServer serves n's /api (cluster-wide, as cmd/proxy does with
// --nats-url) and /ws/events on a server of their own, and returns its base
// URL.
func adminServer(t testing.TB, n *node) string {
	t.Helper()
	r := chi.NewRouter()
	r.Handle("/ws/events", n.fwd.Events())
	r.Mount("/api", api.New(n.fwd, api.Options{Cluster: n.bus}, zerolog.Nop(), n.met))
	hs := httptest.NewServer(r)
	// Registered after the node's own cleanup: runs before it, so that
	// watchers are gone before the node drains.
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
	})
	return hs.URL
}

// adminCall makes one API request and returns its status, its body, and how
// long it took. The client gives up after 10 s.
func adminCall(t testing.TB, method, u string, body []byte) (int, []byte, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp.StatusCode, b, time.Since(start)
}

// adminGet GETs u, wants 200 and decodes the body into v.
func adminGet(t testing.TB, u string, v any) time.Duration {
	t.Helper()
	status, b, took := adminCall(t, http.MethodGet, u, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, b)
	}
	return took
}

// The replies, as a client reads them (pointers: null is nil).
type groupsReply struct {
	Groups []struct {
		Name    string `json:"name"`
		Members int    `json:"members"`
	} `json:"groups"`
}

type groupReply struct {
	Name    string `json:"name"`
	Members []struct {
		ID             string    `json:"id"`
		Node           string    `json:"node"`
		ConnectedSince time.Time `json:"connected_since"`
		QueuedBytes    *int64    `json:"queued_bytes"`
	} `json:"members"`
	Partial      *bool    `json:"partial"`
	MissingNodes []string `json:"missing_nodes"`
}

type connectionsReply struct {
	Connections []struct {
		Group       string  `json:"group"`
		ID          string  `json:"id"`
		Node        string  `json:"node"`
		Remote      *string `json:"remote"`
		QueuedBytes *int64  `json:"queued_bytes"`
		MessagesIn  *int64  `json:"messages_in"`
		BytesOut    *int64  `json:"bytes_out"`
	} `json:"connections"`
	Partial      *bool    `json:"partial"`
	MissingNodes []string `json:"missing_nodes"`
}

func (g groupsReply) counts() map[string]int {
	out := map[string]int{}
	for _, e := range g.Groups {
		out[e.Name] = e.Members
	}
	return out
}

func groupURL(base, group string) string { return base + "/api/groups/" + url.PathEscape(group) }

// watcher is a /ws/events client that keeps every event it receives.
type watcher struct {
	t    testing.TB
	conn *websocket.Conn

	events chan event
	closed chan struct{}
}

type event struct {
	Type     string `json:"type"`
	Group    string `json:"group"`
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	Replaced bool   `json:"replaced"`
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	Members  []struct {
		ID string `json:"id"`
	} `json:"members"`
}

func watch(t testing.TB, base, group string) *watcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := strings.Replace(base, "http://", "ws://", 1) + "/ws/events?groupName=" + url.QueryEscape(group)
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("watch %s: %v", group, err)
	}
	w := &watcher{t: t, conn: conn, events: make(chan event, 1000), closed: make(chan struct{})}
	go func() {
		defer close(w.closed)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			var ev event
			if json.Unmarshal(b, &ev) != nil {
				t.Errorf("event not JSON: %s", b)
				return
			}
			w.events <- ev
		}
	}()
	t.Cleanup(func() { conn.CloseNow(); <-w.closed })
	return w
}

// next returns the next event, failing the test if none comes in d.
func (w *watcher) next(d time.Duration) event {
	w.t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case <-time.After(d):
		w.t.Fatalf("no event in %v", d)
	}
	return event{}
}

// waitJoined waits until member id of group has joined on n (the registry
// has it from before its upgrade: the node's own listing only from after).
func waitJoined(t testing.TB, n *node, group, id string) {
	t.Helper()
	waitFor(t, 20*time.Second, id+" to join on "+n.name, func() bool {
		return n.fwd.Registry().Member(group, id) != nil
	})
}

// dialJoined is dial, returning once the member has joined on n: a message
// sent to the group from then on reaches it.
func dialJoined(t testing.TB, n *node, id, group string) *client {
	t.Helper()
	c := dial(t, n, id, group)
	waitJoined(t, n, group, id)
	return c
}
