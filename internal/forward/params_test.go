package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/metrics"
)

// These tests check the handshake rules of SPEC section 2 through real HTTP
// requests to a real server.

// handshakeServer runs a Server (with allowed origin patterns) behind an
// httptest server; both are shut down when the test ends.
func handshakeServer(t *testing.T, origins ...string) (*Server, *httptest.Server) {
	t.Helper()
	opts := Options{
		BufferBytes:    1 << 20,
		SendQueueBytes: 1 << 20,
		WriteTimeout:   2 * time.Second,
		CloseGrace:     time.Second,
		AllowedOrigins: origins,
	}
	s := NewServer(opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), metrics.New())
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		hs.Close()
	})
	return s, hs
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455's sample: 16 bytes

// handshake sends a WebSocket upgrade request for /ws?rawQuery with the extra
// headers (a value "" deletes the header). On 101 the connection is closed
// when the test ends, and body is empty.
func handshake(t *testing.T, hs *httptest.Server, method, rawQuery string, hdr map[string]string) (resp *http.Response, body string) {
	t.Helper()
	req, err := http.NewRequest(method, hs.URL+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = rawQuery // sent as given, malformed or not
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", testKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err = hs.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s /ws?%s: %v", method, rawQuery, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Cleanup(func() { resp.Body.Close() })
		return resp, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// checkRejected asserts a JSON error response {"error": "..."} with status,
// whose message contains every string in mentions and whose body contains
// none of secrets (the request's input must not be echoed).
func checkRejected(t *testing.T, resp *http.Response, body string, status int, mentions []string, secrets ...string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %q", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	msg, ok := v["error"].(string)
	if !ok || len(v) != 1 || msg == "" {
		t.Fatalf(`body %q is not {"error": "<message>"}`, body)
	}
	for _, m := range mentions {
		if !strings.Contains(msg, m) {
			t.Errorf("error %q does not mention %q", msg, m)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(body, s) {
			t.Errorf("body %q echoes the input %q", body, s)
		}
	}
}

// waitJoined waits until the session id is a member of group: the handshake
// was accepted and decoded to exactly these values.
func waitJoined(t *testing.T, s *Server, group, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Registry().Member(group, id) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("id %q never joined group %q", id, group)
		}
		time.Sleep(time.Millisecond)
	}
}

func q(id, group string) string {
	return "id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group)
}

func TestParamsAccepted(t *testing.T) {
	t.Parallel()
	s, hs := handshakeServer(t)
	id128 := strings.Repeat("aB3-_.~x", 16)
	tests := []struct {
		name      string
		rawQuery  string
		id, group string // as decoded
	}{
		{"simple", "id=alice&groupName=demo", "alice", "demo"},
		{"every id character", q("AZaz09-_.~", "g"), "AZaz09-_.~", "g"},
		{"128-character id", q(id128, "g"), id128, "g"},
		{"UUID id", q("123e4567-e89b-12d3-a456-426614174000", "g"), "123e4567-e89b-12d3-a456-426614174000", "g"},
		{"1-byte group", q("a", "x"), "a", "x"},
		{"128-byte ASCII group", q("a", strings.Repeat("g", 128)), "a", strings.Repeat("g", 128)},
		{"128-byte 2-byte runes", q("a", strings.Repeat("é", 64)), "a", strings.Repeat("é", 64)},
		{"128-byte 4-byte runes", q("a", strings.Repeat("😀", 32)), "a", strings.Repeat("😀", 32)},
		{"spaces, slash and symbols", "id=a&groupName=my+group%2Fwith%20%26%3D%3F%25", "a", "my group/with &=?%"},
		{"U+FFFD is not a control", q("a", "x\uFFFDy"), "a", "x\uFFFDy"},
		{"parameters in either order", "groupName=rev&id=b", "b", "rev"},
		{"other parameters", "id=c&groupName=other&token=xyz", "c", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Each case gets its own group, so the same id never replaces another.
			resp, body := handshake(t, hs, http.MethodGet, tt.rawQuery, nil)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101; body %q", resp.StatusCode, body)
			}
			waitJoined(t, s, tt.group, tt.id)
		})
	}
}

func TestParamsRejected(t *testing.T) {
	t.Parallel()
	_, hs := handshakeServer(t)
	const marker = "zq9Marker" // a unique string that must never come back
	long := strings.Repeat("a", 120) + marker
	tests := []struct {
		name     string
		rawQuery string
		mentions []string
		secrets  []string
	}{
		// id
		{"id missing", "groupName=g", []string{"id", "required"}, nil},
		{"id empty", "id=&groupName=g", []string{"id"}, nil},
		{"id without value", "id&groupName=g", []string{"id"}, nil},
		{"id 129 characters", q(long, "g"), []string{"id", "128"}, []string{marker}},
		{"id with !", q(marker+"!", "g"), []string{"id"}, []string{marker}},
		{"id with space", q(marker+" x", "g"), []string{"id"}, []string{marker}},
		{"id with slash", q(marker+"/x", "g"), []string{"id"}, []string{marker}},
		{"id with non-ASCII", q(marker+"é", "g"), []string{"id"}, []string{marker}},
		{"id with NUL", "id=" + marker + "%00&groupName=g", []string{"id"}, []string{marker}},
		{"id with quote", q(marker+`"`, "g"), []string{"id"}, []string{marker}},
		{"id with plus", "id=" + marker + "%2Bx&groupName=g", []string{"id"}, []string{marker}},
		{"id given twice", "id=a&id=a&groupName=g", []string{"id", "once"}, nil},
		{"id given twice, one empty", "id=a&groupName=g&id=", []string{"id", "once"}, nil},
		{"ID in the wrong case", "ID=a&groupName=g", []string{"id", "required"}, nil},
		// groupName
		{"groupName missing", "id=a", []string{"groupName", "required"}, nil},
		{"groupName empty", "id=a&groupName=", []string{"groupName"}, nil},
		{"groupName 129 ASCII bytes", q("a", strings.Repeat("g", 120)+marker), []string{"groupName", "128"}, []string{marker}},
		{"groupName 129 bytes of 2-byte runes", q("a", marker+strings.Repeat("é", 60)), []string{"groupName"}, []string{marker}},
		{"groupName 4-byte runes past 128", q("a", strings.Repeat("😀", 32)+"x"), []string{"groupName"}, nil},
		{"groupName invalid byte FF", "id=a&groupName=" + marker + "%FF", []string{"groupName", "UTF-8"}, []string{marker}},
		{"groupName lead byte then ASCII", "id=a&groupName=" + marker + "%C3%28", []string{"groupName"}, []string{marker}},
		{"groupName lone continuation", "id=a&groupName=%80" + marker, []string{"groupName"}, []string{marker}},
		{"groupName overlong NUL", "id=a&groupName=" + marker + "%C0%80", []string{"groupName"}, []string{marker}},
		{"groupName surrogate", "id=a&groupName=" + marker + "%ED%A0%80", []string{"groupName"}, []string{marker}},
		{"groupName truncated rune", "id=a&groupName=" + marker + "%E2%82", []string{"groupName"}, []string{marker}},
		{"groupName NUL", "id=a&groupName=" + marker + "%00", []string{"groupName", "control"}, []string{marker}},
		{"groupName U+001F", "id=a&groupName=" + marker + "%1F", []string{"groupName"}, []string{marker}},
		{"groupName tab", "id=a&groupName=" + marker + "%09x", []string{"groupName"}, []string{marker}},
		{"groupName newline", "id=a&groupName=" + marker + "%0Ax", []string{"groupName"}, []string{marker}},
		{"groupName DEL", "id=a&groupName=" + marker + "%7F", []string{"groupName"}, []string{marker}},
		{"groupName U+0085", "id=a&groupName=" + marker + "%C2%85", []string{"groupName"}, []string{marker}},
		{"groupName U+009F", "id=a&groupName=" + marker + "%C2%9F", []string{"groupName"}, []string{marker}},
		{"groupName given twice", "id=a&groupName=g&groupName=g", []string{"groupName", "once"}, nil},
		{"groupName given twice, different", "id=a&groupName=g&groupName=h", []string{"groupName", "once"}, nil},
		{"groupName in the wrong case", "id=a&groupname=g", []string{"groupName", "required"}, nil},
		// the query itself
		{"bad escape", "id=" + marker + "%ZZ&groupName=g", []string{"query"}, []string{marker, "%ZZ"}},
		{"bad escape in groupName", "id=a&groupName=" + marker + "%", []string{"query"}, []string{marker}},
		{"bad escape in another parameter", "id=a&groupName=g&x=%G0" + marker, []string{"query"}, []string{marker}},
		{"semicolon separator", "id=a;groupName=" + marker, []string{"query"}, []string{marker}},
		{"empty query", "", []string{"id"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := handshake(t, hs, http.MethodGet, tt.rawQuery, nil)
			secrets := tt.secrets
			if dec, err := url.QueryUnescape(tt.rawQuery); err == nil && len(dec) > 10 {
				secrets = append(secrets, dec)
			}
			checkRejected(t, resp, body, http.StatusBadRequest, tt.mentions, append(secrets, tt.rawQuery)...)
		})
	}
}

// TestHandshakeRejected covers what is wrong with the request rather than its
// parameters.
func TestHandshakeRejected(t *testing.T) {
	t.Parallel()
	_, hs := handshakeServer(t)
	const ok = "id=a&groupName=g"
	tests := []struct {
		name     string
		method   string
		hdr      map[string]string
		status   int
		mentions []string
	}{
		{"plain GET", http.MethodGet, map[string]string{"Connection": "", "Upgrade": "", "Sec-WebSocket-Version": "", "Sec-WebSocket-Key": ""}, http.StatusUpgradeRequired, []string{"upgrade"}},
		{"no Upgrade header", http.MethodGet, map[string]string{"Upgrade": ""}, http.StatusUpgradeRequired, []string{"upgrade"}},
		{"Upgrade not websocket", http.MethodGet, map[string]string{"Upgrade": "h2c"}, http.StatusUpgradeRequired, []string{"upgrade"}},
		{"Connection keep-alive", http.MethodGet, map[string]string{"Connection": "keep-alive"}, http.StatusUpgradeRequired, []string{"upgrade"}},
		{"POST", http.MethodPost, nil, http.StatusMethodNotAllowed, []string{"GET"}},
		{"DELETE", http.MethodDelete, nil, http.StatusMethodNotAllowed, []string{"GET"}},
		{"PUT plain", http.MethodPut, map[string]string{"Connection": "", "Upgrade": ""}, http.StatusMethodNotAllowed, []string{"GET"}},
		{"version 8", http.MethodGet, map[string]string{"Sec-WebSocket-Version": "8"}, http.StatusBadRequest, []string{"Sec-WebSocket-Version"}},
		{"no version", http.MethodGet, map[string]string{"Sec-WebSocket-Version": ""}, http.StatusBadRequest, []string{"Sec-WebSocket-Version"}},
		{"no key", http.MethodGet, map[string]string{"Sec-WebSocket-Key": ""}, http.StatusBadRequest, []string{"Sec-WebSocket-Key"}},
		{"key not base64", http.MethodGet, map[string]string{"Sec-WebSocket-Key": "zq9Marker!!"}, http.StatusBadRequest, []string{"Sec-WebSocket-Key"}},
		{"key of 15 bytes", http.MethodGet, map[string]string{"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"}, http.StatusBadRequest, []string{"Sec-WebSocket-Key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := handshake(t, hs, tt.method, ok, tt.hdr)
			checkRejected(t, resp, body, tt.status, tt.mentions, "zq9Marker")
			if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodGet {
				t.Errorf("Allow: %q, want GET", resp.Header.Get("Allow"))
			}
			// RFC 6455 4.4: a refused version is answered with the one we speak.
			if strings.HasPrefix(tt.name, "version") || tt.name == "no version" {
				if v := resp.Header.Get("Sec-WebSocket-Version"); v != "13" {
					t.Errorf("Sec-WebSocket-Version: %q, want 13", v)
				}
			}
		})
	}
}

// TestHandshakeTwoKeys: two Sec-WebSocket-Key headers are refused with the
// proxy's JSON error.
func TestHandshakeTwoKeys(t *testing.T) {
	t.Parallel()
	_, hs := handshakeServer(t)
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws?id=a&groupName=g HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Key: %s\r\n\r\n", hs.Listener.Addr(), testKey, testKey)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	checkRejected(t, resp, string(body), http.StatusBadRequest, []string{"Sec-WebSocket-Key"})
}

// TestHandshakeHTTP10: an upgrade needs HTTP/1.1; the refusal is the proxy's
// JSON 426.
func TestHandshakeHTTP10(t *testing.T) {
	t.Parallel()
	_, hs := handshakeServer(t)
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws?id=a&groupName=g HTTP/1.0\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", hs.Listener.Addr(), testKey)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	checkRejected(t, resp, string(body), http.StatusUpgradeRequired, []string{"HTTP/1.1"})
}

func TestOrigin(t *testing.T) {
	t.Parallel()
	_, plain := handshakeServer(t)
	_, patterns := handshakeServer(t, "*.example.com", "https://app.example.org", "localhost:*")
	self := func(hs *httptest.Server) string { return "http://" + hs.Listener.Addr().String() }
	tests := []struct {
		name   string
		hs     *httptest.Server
		origin string // "" sends none
		ok     bool
	}{
		{"no Origin", plain, "", true},
		{"same host", plain, self(plain), true},
		{"same host, other scheme", plain, "https://" + plain.Listener.Addr().String(), true},
		{"same host in upper case", plain, strings.ToUpper(self(plain)), true},
		{"same host, other port", plain, "http://127.0.0.1:1", false},
		{"other host", plain, "http://evil.example", false},
		{"other host, no patterns", plain, "https://app.example.com", false},
		{"null origin", plain, "null", false},
		{"garbage origin", plain, "::not a url", false},
		{"wildcard subdomain", patterns, "https://app.example.com", true},
		{"wildcard subdomain, http", patterns, "http://a.example.com", true},
		{"wildcard subdomain, upper case", patterns, "https://APP.Example.COM", true},
		{"wildcard needs a subdomain", patterns, "https://example.com", false},
		{"wildcard spans labels", patterns, "https://a.b.example.com", true},
		{"wildcard suffix trick", patterns, "https://example.com.evil.example", false},
		{"wildcard lookalike", patterns, "https://evilexample.com", false},
		{"scheme pattern", patterns, "https://app.example.org", true},
		{"scheme pattern, other scheme", patterns, "http://app.example.org", false},
		{"scheme pattern, other host", patterns, "https://web.example.org", false},
		{"port pattern", patterns, "http://localhost:3000", true},
		{"same host with patterns", patterns, self(patterns), true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := handshake(t, tt.hs, http.MethodGet, q(fmt.Sprint("o", i), "origins"), map[string]string{"Origin": tt.origin})
			if tt.ok {
				if resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("Origin %q: status %d, want 101; body %q", tt.origin, resp.StatusCode, body)
				}
				return
			}
			checkRejected(t, resp, body, http.StatusForbidden, []string{"rigin"}, "evil")
		})
	}
}

// The id rule of SPEC section 2, written independently of params.go.
var idRule = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,128}$`)

func specGroupName(g string) bool {
	if len(g) < 1 || len(g) > 128 || !utf8.ValidString(g) {
		return false
	}
	for _, r := range g {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) { // Unicode category Cc
			return false
		}
	}
	return true
}

// specAccepts is SPEC section 2 as an oracle.
func specAccepts(rawQuery string) (id, group string, ok bool) {
	v, err := url.ParseQuery(rawQuery)
	if err != nil || len(v["id"]) != 1 || len(v["groupName"]) != 1 {
		return "", "", false
	}
	id, group = v["id"][0], v["groupName"][0]
	return id, group, idRule.MatchString(id) && specGroupName(group)
}

// FuzzParseParams checks parseParams against the SPEC oracle: it never panics,
// accepts exactly what the SPEC accepts with exactly the decoded values, and
// refuses with 400 and one of a fixed set of messages, so no part of the input
// can ever be echoed.
func FuzzParseParams(f *testing.F) {
	// The fixed messages, learnt from one input of each kind.
	messages := map[string]bool{}
	for _, in := range []string{
		"%", "groupName=g", "id=a&id=a", "id=!", "id=a", "id=a&groupName=g&groupName=g", "id=a&groupName=",
	} {
		_, _, rej := parseParams(in, false)
		if rej == nil {
			f.Fatalf("parseParams(%q) accepted", in)
		}
		messages[rej.msg] = true
	}
	if len(messages) != 7 {
		f.Fatalf("expected 7 distinct messages, got %d: %v", len(messages), messages)
	}
	for _, s := range []string{
		"", "id=a&groupName=g", "groupName=g&id=a", "id=a&groupName=my+group", "id=%41&groupName=%C3%A9",
		"id=" + strings.Repeat("a", 128) + "&groupName=" + strings.Repeat("é", 64),
		"id=" + strings.Repeat("a", 129) + "&groupName=g",
		"id=a&groupName=" + strings.Repeat("g", 129),
		"id=a&groupName=%FF", "id=a&groupName=%00", "id=a&groupName=%C2%85", "id=a&groupName=%7F",
		"id=a&groupName=%ED%A0%80", "id=a%ZZ&groupName=g", "id=a;groupName=g", "id=a&id=b&groupName=g",
		"id=a&groupName=g&groupName=g", "id&groupName", "=&=&", "id=a&groupName=g&x=%", "id=~.-_&groupName=%F0%9F%98%80",
		"id=123e4567-e89b-12d3-a456-426614174000&groupName=room-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, group, rej := parseParams(raw, false)
		wantID, wantGroup, wantOK := specAccepts(raw)
		if rej == nil {
			if !wantOK {
				t.Fatalf("parseParams(%q) accepted id %q group %q; SPEC refuses", raw, id, group)
			}
			if id != wantID || group != wantGroup {
				t.Fatalf("parseParams(%q) = %q, %q; want %q, %q", raw, id, group, wantID, wantGroup)
			}
			// Redundant with the oracle, stated plainly.
			if !idRule.MatchString(id) || !utf8.ValidString(group) || len(group) < 1 || len(group) > 128 {
				t.Fatalf("accepted a bad id %q or group %q", id, group)
			}
			return
		}
		if wantOK {
			t.Fatalf("parseParams(%q) refused (%s); SPEC accepts id %q group %q", raw, rej.msg, wantID, wantGroup)
		}
		if rej.status != http.StatusBadRequest || rej.reason == "" {
			t.Fatalf("parseParams(%q): status %d reason %q", raw, rej.status, rej.reason)
		}
		if !messages[rej.msg] {
			t.Fatalf("parseParams(%q): message %q is not one of the fixed messages", raw, rej.msg)
		}
	})
}

// TestVersionRefusalNamesVersion: a handshake refused for a missing or
// unsupported Sec-WebSocket-Version names the version the proxy speaks (RFC
// 6455 section 4.4); other refusals add no such header.
func TestVersionRefusalNamesVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		hdr  map[string]string
		want string // Sec-WebSocket-Version of the response
	}{
		{"version 8", map[string]string{"Sec-WebSocket-Version": "8"}, "13"},
		{"no version", map[string]string{"Sec-WebSocket-Version": ""}, "13"},
		{"two versions", map[string]string{"Sec-WebSocket-Version": "8, 13"}, "13"},
		{"version 13, no key", map[string]string{"Sec-WebSocket-Key": ""}, ""},
		{"not an upgrade", map[string]string{"Upgrade": ""}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/ws?id=a&groupName=g", nil)
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Sec-WebSocket-Version", "13")
			r.Header.Set("Sec-WebSocket-Key", testKey)
			for k, v := range tt.hdr {
				if v == "" {
					r.Header.Del(k)
				} else {
					r.Header.Set(k, v)
				}
			}
			rej := checkUpgrade(r)
			if rej == nil {
				t.Fatal("accepted")
			}
			h := http.Header{}
			rej.setHeader(h)
			if got := h.Values("Sec-WebSocket-Version"); len(got) > 1 || h.Get("Sec-WebSocket-Version") != tt.want {
				t.Fatalf("refused with %d %q: Sec-WebSocket-Version %q, want %q", rej.status, rej.msg, got, tt.want)
			}
		})
	}
}
