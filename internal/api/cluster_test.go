package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/forward"
)

// fakeCluster is the rest of a cluster: node n2 holds "b" of g (answering)
// and node n3 holds "c" of g (silent).
type fakeCluster struct {
	kickErr error
	kicked  []string
}

func (f *fakeCluster) NodeName() string             { return "n1" }
func (f *fakeCluster) RemoteCounts() map[string]int { return map[string]int{"g": 2} }

func (f *fakeCluster) Survey(_ context.Context, group string) ([]forward.MemberStatus, []string) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []forward.MemberStatus{
		{Group: "g", ID: "b", Node: "n2", Since: since, Known: true, Remote: "10.0.0.2:5", Queued: 7},
		{Group: "g", ID: "c", Node: "n3", Since: since},
	}, []string{"n3"}
}

func (f *fakeCluster) KickRemote(_ context.Context, group, id string) error {
	f.kicked = append(f.kicked, group+"/"+id)
	return f.kickErr
}

// TestClusterMode: with a Cluster, listings merge this node's members with
// the others' (a silent node's fields null, the reply partial), and a kick
// of a member not here goes to the cluster, its failures mapped to 404,
// 504 and 503.
func TestClusterMode(t *testing.T) {
	fc := &fakeCluster{}
	p := startProxy(t, Options{Cluster: fc})
	p.dial(t, "a", "g")

	var groups struct{ Groups []groupSummary }
	decode(t, p.do(t, http.MethodGet, "/api/groups", "", nil), http.StatusOK, &groups)
	if fmt.Sprint(groups.Groups) != "[{g 3}]" {
		t.Errorf("groups %v, want g with 3", groups.Groups)
	}

	r := p.do(t, http.MethodGet, groupPath("g"), "", nil)
	want := `{"name":"g","members":[` +
		`{"id":"a","node":"n1","connected_since":"X","queued_bytes":0},` +
		`{"id":"b","node":"n2","connected_since":"2026-01-02T03:04:05Z","queued_bytes":7},` +
		`{"id":"c","node":"n3","connected_since":"2026-01-02T03:04:05Z","queued_bytes":null}],` +
		`"partial":true,"missing_nodes":["n3"]}`
	var g struct {
		Members []struct {
			ConnectedSince string `json:"connected_since"`
		}
	}
	decode(t, r, http.StatusOK, &g)
	if got := string(r.body); len(g.Members) != 3 || got != strings.Replace(want, "X", g.Members[0].ConnectedSince, 1)+"\n" {
		t.Errorf("GET /api/groups/g:\n%s\nwant\n%s", got, want)
	}

	var conns struct {
		Connections []map[string]any
		Partial     bool
	}
	decode(t, p.do(t, http.MethodGet, "/api/connections", "", nil), http.StatusOK, &conns)
	if len(conns.Connections) != 3 || !conns.Partial || conns.Connections[2]["remote"] != nil ||
		conns.Connections[1]["remote"] != "10.0.0.2:5" || conns.Connections[0]["node"] != "n1" {
		t.Errorf("GET /api/connections: %v", conns)
	}

	for _, tc := range []struct {
		err    error
		status int
	}{
		{nil, http.StatusNoContent},
		{forward.ErrNoMember, http.StatusNotFound},
		{fmt.Errorf("slow: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{errors.New("cut off"), http.StatusServiceUnavailable},
	} {
		fc.kickErr = tc.err
		r := p.do(t, http.MethodDelete, groupPath("g")+"/members/b", "", nil)
		if r.status != tc.status {
			t.Errorf("kick with the cluster answering %v: %d %s, want %d", tc.err, r.status, r.body, tc.status)
		}
	}
	// A member here is kicked here.
	fc.kicked = nil
	if r := p.do(t, http.MethodDelete, groupPath("g")+"/members/a", "", nil); r.status != http.StatusNoContent || len(fc.kicked) != 0 {
		t.Errorf("kick of a member here: %d, asked the cluster: %v", r.status, fc.kicked)
	}
}
