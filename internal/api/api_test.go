package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/forward"
)

const cafe = "salle café/ü 1"

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n)})
	_, _ = r.Read(b)
	return b
}

func TestListings(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})

	var groups struct {
		Groups []struct {
			Name    string
			Members int
		}
	}
	decode(t, p.do(t, "GET", "/api/groups", "", nil), 200, &groups)
	if groups.Groups == nil || len(groups.Groups) != 0 {
		t.Fatalf("groups with nobody connected = %+v, want an empty list", groups.Groups)
	}

	before := time.Now()
	p.dial(t, "bob", cafe)
	p.dial(t, "alice", cafe)
	p.dial(t, "carol", "other")

	decode(t, p.do(t, "GET", "/api/groups", "", nil), 200, &groups)
	if got := fmt.Sprint(groups.Groups); got != "[{other 1} {"+cafe+" 2}]" {
		t.Fatalf("groups = %s", got)
	}

	var g struct {
		Name    string
		Members []struct {
			ID             string
			ConnectedSince time.Time `json:"connected_since"`
			QueuedBytes    *int64    `json:"queued_bytes"`
		}
	}
	decode(t, p.do(t, "GET", groupPath(cafe), "", nil), 200, &g)
	if g.Name != cafe || len(g.Members) != 2 || g.Members[0].ID != "alice" || g.Members[1].ID != "bob" {
		t.Fatalf("group = %+v", g)
	}
	for _, m := range g.Members {
		if m.ConnectedSince.Before(before.Add(-time.Second)) || m.ConnectedSince.After(time.Now()) {
			t.Errorf("%s connected_since = %v, want about now", m.ID, m.ConnectedSince)
		}
		if m.QueuedBytes == nil || *m.QueuedBytes != 0 {
			t.Errorf("%s queued_bytes = %v, want 0", m.ID, m.QueuedBytes)
		}
	}

	var conns struct {
		Connections []struct {
			Group, ID, Remote string
			MessagesIn        int64 `json:"messages_in"`
		}
	}
	decode(t, p.do(t, "GET", "/api/connections", "", nil), 200, &conns)
	if len(conns.Connections) != 3 {
		t.Fatalf("connections = %+v", conns.Connections)
	}
	seen := map[string]bool{}
	for _, c := range conns.Connections {
		seen[c.Group+"|"+c.ID] = true
		if _, _, err := net.SplitHostPort(c.Remote); err != nil {
			t.Errorf("remote %q: %v", c.Remote, err)
		}
	}
	if !seen[cafe+"|alice"] || !seen[cafe+"|bob"] || !seen["other|carol"] {
		t.Fatalf("connections = %+v", conns.Connections)
	}

	r := p.do(t, "GET", groupPath("nobody here"), "", nil)
	decode(t, r, 404, nil)
	if strings.Contains(string(r.body), "nobody") {
		t.Fatalf("404 body echoes the group name: %s", r.body)
	}
}

// JSON output escapes what a group name may hold, so listings are safe to
// show in a browser.
func TestListingEscapesNames(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	name := `<script>alert("x")</script> & é`
	p.dial(t, "a", name)
	r := p.do(t, "GET", "/api/groups", "", nil)
	if bytes.ContainsAny(r.body, "<>&") {
		t.Fatalf("raw HTML characters in %s", r.body)
	}
	var v struct{ Groups []struct{ Name string } }
	decode(t, r, 200, &v)
	if len(v.Groups) != 1 || v.Groups[0].Name != name {
		t.Fatalf("groups = %+v", v.Groups)
	}
}

// Group names with any UTF-8 in them work in paths, however the client
// escaped them; see pathParam.
func TestEscapedGroupNames(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	for _, tc := range []struct{ name, escaped string }{
		{cafe, url.PathEscape(cafe)}, // %2F: chi routes on RawPath
		{cafe, "salle%20caf%c3%a9%2f%c3%bc%201"},
		{"x y", "x%20y"},         // the default escaping: chi routes on Path
		{"100%", "100%25"},       // a literal %: must not be unescaped twice
		{"a+b", "a+b"},           // + is not a space in a path
		{"ü", "%C3%BC"},          //
		{"ü", "ü"},               // unescaped UTF-8 on the wire
		{"😀 émoji", "😀%20émoji"}, //
	} {
		t.Run(tc.escaped, func(t *testing.T) {
			c := p.dial(t, "m", tc.name)
			var g struct{ Name string }
			decode(t, p.do(t, "GET", "/api/groups/"+tc.escaped, "", nil), 200, &g)
			if g.Name != tc.name {
				t.Fatalf("name = %q, want %q", g.Name, tc.name)
			}
			msg := []byte("to " + tc.escaped)
			if n := receivers(t, p.do(t, "POST", "/api/groups/"+tc.escaped+"/messages", "text/plain", bytes.NewReader(msg))); n != 1 {
				t.Fatalf("receivers = %d", n)
			}
			expectMsg(t, c, websocket.MessageText, msg)
			if n := receivers(t, p.do(t, "POST", "/api/groups/"+tc.escaped+"/members/m/messages", "text/plain", bytes.NewReader(msg))); n != 1 {
				t.Fatalf("receivers = %d", n)
			}
			expectMsg(t, c, websocket.MessageText, msg)
			if r := p.do(t, "DELETE", "/api/groups/"+tc.escaped+"/members/m", "", nil); r.status != 204 {
				t.Fatalf("kick: %d %s", r.status, r.body)
			}
			expectClose(t, c, 4003)
			waitFor(t, "group to go away", func() bool { return p.fwd.Registry().Get(tc.name) == nil })
		})
	}
}

func TestPublishToGroup(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	a := p.dial(t, "a", cafe)
	b := p.dial(t, "b", cafe)
	other := p.dial(t, "c", "other")

	text := "héllo wörld ✓ " + strings.Repeat("ünïcode ", 40_000) // ~360 KB: streamed
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		typ               websocket.MessageType
	}{
		{"text/plain", "text/plain; charset=utf-8", []byte("hello"), websocket.MessageText},
		{"text/html", "text/html", []byte("<b>hi</b>"), websocket.MessageText},
		{"json", "application/json", []byte(`{"k":"v"}`), websocket.MessageText},
		{"+json", "application/vnd.example+json", []byte(`[1,2]`), websocket.MessageText},
		{"empty text", "text/plain", []byte{}, websocket.MessageText},
		{"octet-stream", "application/octet-stream", randomBytes(1000), websocket.MessageBinary},
		{"no content type", "", []byte{0, 1, 2, 0xff}, websocket.MessageBinary},
		{"form is binary", "application/x-www-form-urlencoded", []byte("a=b"), websocket.MessageBinary},
		{"bad content type", "text/plain; ;;", []byte("x"), websocket.MessageBinary},
		{"empty binary", "application/octet-stream", []byte{}, websocket.MessageBinary},
		{"streamed binary", "application/octet-stream", randomBytes(3<<20 + 7), websocket.MessageBinary},
		{"streamed text", "text/plain", []byte(text), websocket.MessageText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A reader that hides its length makes the request chunked.
			body := io.Reader(bytes.NewReader(tc.body))
			if len(tc.body) > 1<<16 {
				body = iotest.HalfReader(body)
			}
			if n := receivers(t, p.do(t, "POST", groupPath(cafe)+"/messages", tc.contentType, body)); n != 2 {
				t.Fatalf("receivers = %d, want 2", n)
			}
			expectMsg(t, a, tc.typ, tc.body)
			expectMsg(t, b, tc.typ, tc.body)
		})
	}
	// The other group got none of it: its next message is this one.
	marker := []byte("only for other")
	if n := receivers(t, p.do(t, "POST", "/api/groups/other/messages", "text/plain", bytes.NewReader(marker))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, other, websocket.MessageText, marker)
}

func TestPublishToMember(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	a := p.dial(t, "a", "g")
	b := p.dial(t, "b", "g")

	blob := randomBytes(200 << 10) // streamed
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/members/b/messages", "application/octet-stream", bytes.NewReader(blob))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/members/b/messages", "text/plain", strings.NewReader("just b"))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, b, websocket.MessageBinary, blob)
	expectMsg(t, b, websocket.MessageText, []byte("just b"))
	// a got neither: its next message is one for the whole group.
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/messages", "text/plain", strings.NewReader("all"))); n != 2 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, a, websocket.MessageText, []byte("all"))
	expectMsg(t, b, websocket.MessageText, []byte("all"))
}

func TestBroadcast(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	if n := receivers(t, p.do(t, "POST", "/api/connections/broadcast", "text/plain", strings.NewReader("nobody"))); n != 0 {
		t.Fatalf("receivers with nobody connected = %d", n)
	}
	conns := []*websocket.Conn{p.dial(t, "a", "g1"), p.dial(t, "b", "g1"), p.dial(t, "a", "g2")}
	for _, m := range []struct {
		ct   string
		body []byte
		typ  websocket.MessageType
	}{
		{"text/plain", []byte("to everyone"), websocket.MessageText},
		{"", randomBytes(100 << 10), websocket.MessageBinary},
	} {
		if n := receivers(t, p.do(t, "POST", "/api/connections/broadcast", m.ct, bytes.NewReader(m.body))); n != 3 {
			t.Fatalf("receivers = %d, want 3", n)
		}
		for _, c := range conns {
			expectMsg(t, c, m.typ, m.body)
		}
	}
}

func TestKick(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	a := p.dial(t, "a", "g")
	b := p.dial(t, "b", "g")

	r := p.do(t, "DELETE", "/api/groups/g/members/a", "", nil)
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("kick: %d %q", r.status, r.body)
	}
	expectClose(t, a, 4003)
	waitFor(t, "a to leave", func() bool { return p.fwd.Registry().Member("g", "a") == nil })

	r = p.do(t, "DELETE", "/api/groups/g/members/a", "", nil)
	decode(t, r, 404, nil)
	if r.errorText(t) != "no such member" {
		t.Fatalf("error = %q", r.errorText(t))
	}
	// b is untouched.
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/messages", "text/plain", strings.NewReader("still here"))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, b, websocket.MessageText, []byte("still here"))

	p.do(t, "DELETE", "/api/groups/g/members/b", "", nil)
	expectClose(t, b, 4003)
	waitFor(t, "the group to go away", func() bool { return p.fwd.Registry().Get("g") == nil })
	if e := p.do(t, "DELETE", "/api/groups/g/members/b", "", nil).errorText(t); e != "no such group" {
		t.Fatalf("error = %q", e)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	// Every refused body here is held whole (under --buffer-bytes) and
	// dropped, so the member must receive none of them.
	p := startProxy(t, Options{MaxMessageBytes: 100 << 10}, func(o *forward.Options) { o.BufferBytes = 1 << 20 })
	c := p.dial(t, "m", "g")
	long := strings.Repeat("é", 65) // 130 bytes

	for _, tc := range []struct {
		name, method, path, ct string
		body                   []byte
		chunked                bool
		status                 int
		echo                   string // must not appear in the body
	}{
		{"unknown group", "POST", "/api/groups/nogroup/messages", "text/plain", []byte("x"), false, 404, "nogroup"},
		{"unknown group, member", "POST", "/api/groups/nogroup/members/m/messages", "text/plain", []byte("x"), false, 404, "nogroup"},
		{"unknown member", "POST", "/api/groups/g/members/nobody/messages", "text/plain", []byte("x"), false, 404, "nobody"},
		{"unknown member kick", "DELETE", "/api/groups/g/members/nobody", "", nil, false, 404, "nobody"},
		{"unknown group get", "GET", "/api/groups/nogroup", "", nil, false, 404, "nogroup"},
		{"invalid UTF-8 text", "POST", "/api/groups/g/messages", "text/plain", []byte("bad \xff\xfe text"), false, 400, "bad"},
		{"invalid UTF-8 JSON", "POST", "/api/groups/g/members/m/messages", "application/json", []byte("\"\xc3\""), false, 400, ""},
		{"invalid UTF-8 broadcast", "POST", "/api/connections/broadcast", "text/plain", []byte("\xed\xa0\x80"), false, 400, ""},
		{"too big", "POST", "/api/groups/g/messages", "application/octet-stream", make([]byte, 100<<10+1), false, 413, ""},
		{"too big chunked", "POST", "/api/groups/g/messages", "application/octet-stream", make([]byte, 100<<10+1), true, 413, ""},
		{"too big member", "POST", "/api/groups/g/members/m/messages", "text/plain", bytes.Repeat([]byte("a"), 200<<10), true, 413, ""},
		{"too big broadcast", "POST", "/api/connections/broadcast", "", make([]byte, 300<<10), false, 413, ""},
		{"group not UTF-8", "GET", "/api/groups/%ff%fe", "", nil, false, 400, ""},
		{"group with control character", "POST", "/api/groups/a%0Ab/messages", "text/plain", []byte("x"), false, 400, ""},
		{"group too long", "POST", groupPath(long) + "/messages", "text/plain", []byte("x"), false, 400, "é"},
		{"id with space", "POST", "/api/groups/g/members/bad%20id/messages", "text/plain", []byte("x"), false, 400, "bad"},
		{"id not ASCII", "DELETE", "/api/groups/g/members/%C3%A9", "", nil, false, 400, "é"},
		{"id too long", "DELETE", "/api/groups/g/members/" + strings.Repeat("i", 129), "", nil, false, 400, "iii"},
		{"unknown route", "GET", "/api/nothing-here", "", nil, false, 404, "nothing"},
		{"wrong method", "PUT", "/api/groups", "", nil, false, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
				if tc.chunked {
					body = iotest.HalfReader(body)
				}
			}
			r := p.do(t, tc.method, tc.path, tc.ct, body)
			decode(t, r, tc.status, nil)
			msg := r.errorText(t)
			if tc.echo != "" && strings.Contains(msg, tc.echo) {
				t.Fatalf("error %q echoes the request", msg)
			}
		})
	}
	// The member received none of the refused messages.
	marker := []byte("the first message m sees")
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/messages", "text/plain", bytes.NewReader(marker))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, c, websocket.MessageText, marker)
}

func TestDraining(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{})
	c := p.dial(t, "m", "g")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.fwd.Shutdown(ctx)
	expectClose(t, c, websocket.StatusGoingAway)

	for _, path := range []string{"/api/groups/g/messages", "/api/groups/g/members/m/messages", "/api/connections/broadcast"} {
		r := p.do(t, "POST", path, "text/plain", strings.NewReader("late"))
		decode(t, r, http.StatusServiceUnavailable, nil)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", path)
		}
	}
	decode(t, p.do(t, "GET", "/api/groups", "", nil), 200, nil)
}

func TestToken(t *testing.T) {
	t.Parallel()
	const token = "s3cret-tøken"
	p := startProxy(t, Options{Token: token})
	c := p.dial(t, "m", "g")

	routes := []struct{ method, path string }{
		{"GET", "/api/groups"},
		{"GET", "/api/groups/g"},
		{"POST", "/api/groups/g/messages"},
		{"POST", "/api/groups/g/members/m/messages"},
		{"DELETE", "/api/groups/g/members/m"},
		{"GET", "/api/connections"},
		{"POST", "/api/connections/broadcast"},
	}
	for _, auth := range []string{
		"",
		"Bearer",
		"Bearer ",
		"Bearer wrong",
		"Bearer " + token + "x",
		"Bearer " + token[:len(token)-1],
		"Basic " + token,
		token,
	} {
		for _, rt := range routes {
			r := p.doAuth(t, rt.method, rt.path, "text/plain", strings.NewReader("not allowed"), auth)
			decode(t, r, http.StatusUnauthorized, nil)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s %s: WWW-Authenticate = %q", rt.method, rt.path, r.header.Get("WWW-Authenticate"))
			}
			if msg := r.errorText(t); strings.Contains(msg, "s3cret") || strings.Contains(msg, "wrong") {
				t.Fatalf("error %q echoes the request", msg)
			}
		}
	}
	// The refused publishes and kicks did nothing.
	if p.fwd.Registry().Member("g", "m") == nil {
		t.Fatal("m was kicked without a token")
	}
	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER  " + token} {
		r := p.doAuth(t, "POST", "/api/groups/g/messages", "text/plain", strings.NewReader(auth), auth)
		if n := receivers(t, r); n != 1 {
			t.Fatalf("receivers = %d", n)
		}
		expectMsg(t, c, websocket.MessageText, []byte(auth))
	}
}

// A body larger than --buffer-bytes is relayed as it arrives; when it then
// turns out invalid or too big, receivers part-way through it are closed with
// 4002, exactly as for a member's message (see README), and the publisher
// gets 400 or 413.
func TestStreamedPublishFails(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{MaxMessageBytes: 1 << 20})
	for _, tc := range []struct {
		name, ct string
		body     []byte
		status   int
	}{
		{"invalid UTF-8", "text/plain", append(bytes.Repeat([]byte("a"), 512<<10), 0xff), 400},
		{"too big", "application/octet-stream", make([]byte, 2<<20), 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.dial(t, "m", "g-"+tc.name)
			r := p.do(t, "POST", groupPath("g-"+tc.name)+"/messages", tc.ct, iotest.HalfReader(bytes.NewReader(tc.body)))
			decode(t, r, tc.status, nil)
			expectClose(t, c, 4002)
		})
	}
}

// A publish whose body stops arriving fails with 408 after the idle timeout
// and delivers nothing.
func TestPublishBodyStalls(t *testing.T) {
	t.Parallel()
	p := startProxy(t, Options{BodyIdleTimeout: 200 * time.Millisecond})
	c := p.dial(t, "m", "g")

	for _, size := range []int{300 << 10, 10 << 10} { // streamed, then buffered
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /api/groups/g/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size+1)
		if _, err := conn.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status = %d, want 408; body %s", resp.StatusCode, b)
		}
		if size > 64<<10 {
			// Part-way through a streamed message: the receiver is closed
			// with 4002, as when a member's message is abandoned.
			expectClose(t, c, 4002)
			c = p.dial(t, "m", "g")
		}
	}
	marker := []byte("next")
	if n := receivers(t, p.do(t, "POST", "/api/groups/g/messages", "text/plain", bytes.NewReader(marker))); n != 1 {
		t.Fatalf("receivers = %d", n)
	}
	expectMsg(t, c, websocket.MessageText, marker)
}

// Published messages meet the slow-consumer policy as members' messages do:
// under backpressure a receiver that reads nothing holds the publish until
// --write-timeout evicts it, and the others get the message whole.
func TestPublishSlowConsumer(t *testing.T) {
	t.Parallel()
	// The write timeout applies to the healthy reader too, so it is long
	// enough for a reader starved of CPU (-race, a busy machine) to keep up.
	// The publish is held until the stuck receiver's writer has made no
	// progress for a whole write timeout; its socket's buffers keep taking
	// a little for a while, so that is about 15 s here.
	const writeTimeout = 5 * time.Second
	p := startProxy(t, Options{}, func(o *forward.Options) {
		o.SendQueueBytes = 64 << 10
		o.WriteTimeout = writeTimeout
	})
	p.dial(t, "stuck", "g") // never reads
	stuck := p.fwd.Registry().Member("g", "stuck")
	reader := p.dial(t, "reader", "g")
	healthy := p.fwd.Registry().Member("g", "reader")

	blob := randomBytes(32 << 20) // more than socket buffers hold
	start := time.Now()
	done := make(chan response, 1)
	go func() {
		r, err := p.request("POST", "/api/groups/g/messages", "application/octet-stream", bytes.NewReader(blob), "")
		if err != nil {
			r.body = []byte(err.Error())
		}
		done <- r
	}()
	// The reader gets the whole message however long it takes; the minute
	// only stops a hang.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	typ, got, err := reader.Read(ctx)
	if err != nil {
		code, reason, _ := healthy.CloseStatus()
		t.Fatalf("reader: %v (after %v; its session's close status: %d %q)", err, time.Since(start), code, reason)
	}
	if typ != websocket.MessageBinary || !bytes.Equal(got, blob) {
		t.Fatalf("reader got %v of %d bytes, want the %d bytes published", typ, len(got), len(blob))
	}
	var r response
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the publish did not return within a minute")
	}
	if n := receivers(t, r); n != 2 {
		t.Fatalf("receivers = %d, want 2 (it was queued for both)", n)
	}
	// The publish was held by the stuck receiver: it cannot have ended before
	// a write timeout had passed, and that receiver was evicted for it.
	if d := time.Since(start); d < writeTimeout {
		t.Errorf("the publish returned after %v, before the %v write timeout could evict the stuck receiver", d, writeTimeout)
	}
	if code, reason, _ := stuck.CloseStatus(); code != websocket.StatusPolicyViolation || reason != "slow consumer" {
		t.Errorf("the stuck receiver's close status is %d %q, want 1008 \"slow consumer\"", code, reason)
	}
	if code, reason, _ := healthy.CloseStatus(); code != 0 {
		t.Errorf("the healthy reader was closed too: %d %q", code, reason)
	}
	waitFor(t, "the stuck receiver to leave", func() bool { return p.fwd.Registry().Member("g", "stuck") == nil })
}
