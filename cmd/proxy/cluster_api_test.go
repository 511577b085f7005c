package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/natstest"
)

// TestClusterAdminAPI: with --nats-url, the admin API of one proxy lists a
// member of another, with its node, and its messages reach it.
func TestClusterAdminAPI(t *testing.T) {
	ns := natstest.Start(t)
	p1 := startProc(t, "--nats-url", ns.URL(), "--node-name", "n1")
	p2 := startProc(t, "--nats-url", ns.URL(), "--node-name", "n2")
	b := dial(t, p2.addr(), "b", "g")

	var body []byte
	waitFor(t, 20*time.Second, "n1's API to list b on n2", func() bool {
		var status int
		status, body = p1.api(t, http.MethodGet, "/api/groups/g", "", "", nil)
		var g struct {
			Members []struct{ ID, Node string }
		}
		return status == http.StatusOK && json.Unmarshal(body, &g) == nil &&
			len(g.Members) == 1 && g.Members[0].ID == "b" && g.Members[0].Node == "n2"
	})
	if !strings.Contains(string(body), `"partial":false`) {
		t.Errorf("GET /api/groups/g on n1: %s, want partial:false", body)
	}
	// b may be in the registry a moment before it has joined on n2.
	waitFor(t, 20*time.Second, "b to join on n2", func() bool {
		status, body := p2.api(t, http.MethodGet, "/api/groups/g", "", "", nil)
		return status == http.StatusOK && strings.Contains(string(body), `"node":"n2","connected_since"`)
	})
	status, reply := p1.api(t, http.MethodPost, "/api/groups/g/messages", "", "text/plain", strings.NewReader("hello b"))
	if status != http.StatusAccepted || !strings.Contains(string(reply), `"receivers":1`) {
		t.Fatalf("POST on n1 to g: %d %s", status, reply)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, msg, err := b.Read(ctx)
	if err != nil || string(msg) != "hello b" {
		t.Fatalf("b read %q, %v", msg, err)
	}
}
