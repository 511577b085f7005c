package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wsproxy/wsproxy/internal/auth"
)

const testSecret = "auth-test-secret-0123456789abcdef-0123456789"

// writeTemp writes content to a new file in a temporary directory.
func writeTemp(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAuthProc runs the proxy with --auth=jwt and the test secret, logging
// at debug level.
func startAuthProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProc(t, append([]string{"--auth=jwt", "--jwt-secret-file", writeTemp(t, "secret", testSecret+"\n"),
		"--log-level", "debug"}, args...)...)
}

// mint returns a token from the test secret.
func mint(t testing.TB, sub string, ttl time.Duration, groups ...string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), sub, groups, ttl, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expOf is the exp claim of a token.
func expOf(t testing.TB, token string) time.Time {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		t.Fatal(err)
	}
	return c.ExpiresAt.Time
}

// dialWS connects to p's /ws with query and opts (nil: none). client, if not
// nil, is the HTTP client (for TLS).
func dialWS(t testing.TB, p *proc, query string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = httpClient
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, p.ws()+"?"+query, opts)
	if err == nil {
		c.SetReadLimit(-1)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// bearer is DialOptions sending token as Authorization: Bearer.
func bearer(token string) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}}
}

// mustDial connects or fails the test.
func mustDial(t testing.TB, p *proc, query string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, _, err := dialWS(t, p, query, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", query, err)
	}
	return c
}

// refused is the answer to a handshake the proxy refused.
type refused struct {
	status    int
	challenge string // WWW-Authenticate
	ctype     string
	msg       string // the JSON body's error
	body      string
}

// handshake sends a WebSocket handshake with query and headers (name, value
// pairs) and returns the answer.
func handshake(t *testing.T, p *proc, query string, hdr ...string) refused {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base+"/ws?"+query, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return refused{status: resp.StatusCode}
	}
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	_ = json.Unmarshal(b, &e)
	return refused{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Content-Type"), e.Error, string(b)}
}

// TestAuthRefusals: with --auth=jwt, every bad or missing token, and every id
// or group a token does not allow, is refused before the upgrade with the
// SPEC's status, WWW-Authenticate on 401, and a constant JSON text.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	p := startAuthProc(t)
	alice := mint(t, "alice", time.Hour, "room-*", "lobby")
	parts := strings.Split(alice, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	other, _ := auth.Mint([]byte("some-other-secret-0123456789abcdef0123"), "alice", []string{"*"}, time.Hour, "", "")
	expired := mint(t, "alice", -time.Minute, "*")
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"sub": "alice", "groups": []string{"*"}, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "groups": []string{"*"}}).
		SignedString([]byte(testSecret))

	const room = "id=alice&groupName=room-1"
	authz := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	for _, tc := range []struct {
		name  string
		query string
		hdr   []string
		want  *auth.Refusal // nil: 101
	}{
		{"missing", room, nil, auth.RefuseMissing},
		{"empty query token", room + "&token=", nil, auth.RefuseMissing},
		{"malformed", room, authz("not-a-jwt"), auth.RefuseMalformed},
		{"malformed, three parts", room, authz("a.b.c"), auth.RefuseMalformed},
		{"bad signature", room, authz(forged), auth.RefuseInvalid},
		{"another secret", room, authz(other), auth.RefuseInvalid},
		{"expired", room, authz(expired), auth.RefuseExpired},
		{"alg none", room, authz(none), auth.RefuseInvalid},
		{"no exp", room, authz(noExp), auth.RefuseInvalid},
		{"wrong id", "id=bob&groupName=room-1", authz(alice), auth.RefuseID},
		{"group not allowed", "id=alice&groupName=kitchen", authz(alice), auth.RefuseGroup},
		{"room-* does not admit roomx", "id=alice&groupName=roomx", authz(alice), auth.RefuseGroup},
		{"room-* does not admit room", "id=alice&groupName=room", authz(alice), auth.RefuseGroup},
		{"lobby does not admit lobby2", "id=alice&groupName=lobby2", authz(alice), auth.RefuseGroup},
		{"bearer subprotocol without wsproxy", room, []string{"Sec-WebSocket-Protocol", auth.BearerPrefix + alice}, auth.RefuseSubprotocol},
		{"room-* admits room-1", room, authz(alice), nil},
		{"room-* admits room-", "id=alice&groupName=room-", authz(alice), nil},
		{"exact name", "id=alice&groupName=lobby", authz(alice), nil},
		{"id from the token", "groupName=lobby", authz(alice), nil},
	} {
		got := handshake(t, p, tc.query, tc.hdr...)
		if tc.want == nil {
			if got.status != http.StatusSwitchingProtocols {
				t.Errorf("%s: %d %s, want 101", tc.name, got.status, got.body)
			}
			continue
		}
		if got.status != tc.want.Status || got.msg != tc.want.Msg || got.ctype != "application/json" {
			t.Errorf("%s: %d %q (%s), want %d %q", tc.name, got.status, got.body, got.ctype, tc.want.Status, tc.want.Msg)
		}
		wantChallenge := ""
		if tc.want.Status == http.StatusUnauthorized {
			wantChallenge = `Bearer realm="wsproxy", error="invalid_token"`
			if tc.want == auth.RefuseMissing {
				wantChallenge = `Bearer realm="wsproxy"`
			}
		}
		if got.challenge != wantChallenge {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got.challenge, wantChallenge)
		}
	}
	// Parameters are checked before the token: a bad id is 400 whatever
	// the token.
	if got := handshake(t, p, "id=a%20b&groupName=room-1", authz(alice)...); got.status != http.StatusBadRequest {
		t.Errorf("bad id with a good token: %d %s", got.status, got.body)
	}
	// A token whose subject is not a valid id cannot stand for a missing id.
	if got := handshake(t, p, "groupName=lobby", authz(mint(t, "not an id", time.Hour, "*"))...); got.status != http.StatusForbidden {
		t.Errorf("subject not an id: %d %s", got.status, got.body)
	}
	if v := metric(t, p.addr(), `wsproxy_handshake_rejections_total{reason="auth_group"}`); v != 4 {
		t.Errorf("auth_group rejections counted %v, want 4", v)
	}

	// With only a public key, an HMAC token is refused, whatever it was
	// signed with (the public key's own bytes included).
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	pk := startProc(t, "--auth=jwt", "--jwt-public-key-file", writeTemp(t, "pub.pem", pemText))
	claims := jwt.MapClaims{"sub": "alice", "groups": []string{"*"}, "exp": time.Now().Add(time.Hour).Unix()}
	for name, key := range map[string][]byte{"the public key's PEM": []byte(pemText), "the key's bytes": pub, "a secret": []byte(testSecret)} {
		hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
		if got := handshake(t, pk, room, authz(hs)...); got.status != 401 || got.msg != auth.RefuseInvalid.Msg {
			t.Errorf("HS256 signed with %s while a public key is configured: %d %s", name, got.status, got.body)
		}
	}
	ed, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
	if got := handshake(t, pk, room, authz(ed)...); got.status != http.StatusSwitchingProtocols {
		t.Errorf("EdDSA token: %d %s", got.status, got.body)
	}
	checkLogsClean(t, p, testSecret, alice, forged, other, expired, none, noExp)
}

// checkLogsClean stops p and fails t if its log holds any of secrets (tokens,
// keys, a signature alone).
func checkLogsClean(t *testing.T, p *proc, secrets ...string) {
	t.Helper()
	p.stop()
	logs := p.logText()
	for _, s := range secrets {
		for _, part := range append([]string{s}, strings.Split(s, ".")...) {
			if len(part) >= 16 && strings.Contains(logs, part) {
				t.Errorf("the log holds a secret or part of a token: %.20s...", part)
			}
		}
	}
}

// TestAuthTokenSources: a token is taken from an Authorization header, from
// the subprotocol pair (answered with wsproxy), or from ?token=; without id,
// the token's subject is the id. The log names each member's sub and holds
// no token.
func TestAuthTokenSources(t *testing.T) {
	t.Parallel()
	p := startAuthProc(t, "--admin-token-file", writeTemp(t, "admin", "admin-secret-token\n"))
	tokA := mint(t, "alice", time.Hour, "room-*")
	tokB := mint(t, "bob", time.Hour, "room-1")
	tokC := mint(t, "carol", time.Hour, "*")

	a := mustDial(t, p, "id=alice&groupName=room-1", bearer(tokA))
	b := mustDial(t, p, "id=bob&groupName=room-1", &websocket.DialOptions{
		Subprotocols: []string{auth.Subprotocol, auth.BearerPrefix + tokB}})
	if got := b.Subprotocol(); got != auth.Subprotocol {
		t.Errorf("subprotocol answered %q, want %q", got, auth.Subprotocol)
	}
	if got := a.Subprotocol(); got != "" {
		t.Errorf("a client that offered no subprotocol got %q", got)
	}
	c := mustDial(t, p, "groupName=room-1&token="+url.QueryEscape(tokC), nil)
	waitMembers(t, p, "admin-secret-token", "room-1", "alice", "bob", "carol")
	if st, _ := p.api(t, "GET", "/api/groups", "", "", nil); st != http.StatusUnauthorized {
		t.Errorf("admin API without the token from --admin-token-file: %d", st)
	}

	send(t, a, websocket.MessageText, []byte("from alice"))
	for _, r := range []*websocket.Conn{b, c} {
		if _, got := receive(t, r); string(got) != "from alice" {
			t.Fatalf("got %q", got)
		}
	}
	send(t, c, websocket.MessageBinary, []byte("from carol"))
	for _, r := range []*websocket.Conn{a, b} {
		if _, got := receive(t, r); string(got) != "from carol" {
			t.Fatalf("got %q", got)
		}
	}
	for _, conn := range []*websocket.Conn{a, b, c} {
		conn.Close(websocket.StatusNormalClosure, "")
	}
	checkLogsClean(t, p, testSecret, tokA, tokB, tokC, "admin-secret-token")
	logs := p.logText()
	for _, sub := range []string{"alice", "bob", "carol"} {
		if !strings.Contains(logs, `"sub":"`+sub+`"`) {
			t.Errorf("the log has no sub field for %s", sub)
		}
	}
}

// TestAuthTakeover: a member's id cannot be taken over with another
// subject's token (nor without one): the attempt is refused, and the member
// stays connected and keeps receiving. Its own fresh token still replaces it.
func TestAuthTakeover(t *testing.T) {
	t.Parallel()
	p := startAuthProc(t, "--admin-token", "adm")
	alice := mustDial(t, p, "id=alice&groupName=room-1", bearer(mint(t, "alice", time.Hour, "room-1")))
	bob := mustDial(t, p, "id=bob&groupName=room-1", bearer(mint(t, "bob", time.Hour, "room-1")))
	waitMembers(t, p, "adm", "room-1", "alice", "bob")
	since := members(t, p, "adm", "room-1")["alice"]

	mallory := mint(t, "mallory", time.Hour, "*")
	for name, try := range map[string]func() (*websocket.Conn, *http.Response, error){
		"header": func() (*websocket.Conn, *http.Response, error) {
			return dialWS(t, p, "id=alice&groupName=room-1", bearer(mallory))
		},
		"subprotocol": func() (*websocket.Conn, *http.Response, error) {
			return dialWS(t, p, "id=alice&groupName=room-1", &websocket.DialOptions{
				Subprotocols: []string{auth.Subprotocol, auth.BearerPrefix + mallory}})
		},
		"query": func() (*websocket.Conn, *http.Response, error) {
			return dialWS(t, p, "id=alice&groupName=room-1&token="+mallory, nil)
		},
		"no token": func() (*websocket.Conn, *http.Response, error) {
			return dialWS(t, p, "id=alice&groupName=room-1", nil)
		},
	} {
		_, resp, err := try()
		want := http.StatusForbidden
		if name == "no token" {
			want = http.StatusUnauthorized
		}
		if err == nil || resp == nil || resp.StatusCode != want {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Errorf("takeover by %s: %v (status %d), want %d", name, err, status, want)
		}
	}
	// alice is still there, the same connection, and still receives.
	send(t, bob, websocket.MessageText, []byte("still there?"))
	if _, got := receive(t, alice); string(got) != "still there?" {
		t.Fatalf("alice got %q", got)
	}
	if now := members(t, p, "adm", "room-1")["alice"]; !now.Equal(since) {
		t.Errorf("alice's connection changed: since %v, was %v", now, since)
	}
	// Her own token replaces her, as without auth.
	mustDial(t, p, "groupName=room-1", bearer(mint(t, "alice", time.Hour, "room-1")))
	if err := closeOf(alice, 10*time.Second); websocket.CloseStatus(err) != 4001 {
		t.Errorf("alice replaced by her own token: %v, want 4001", err)
	}
}

// closed is when and how a connection ended.
type closed struct {
	at  time.Time
	err error
}

// watchClose reads c (discarding messages) until it ends.
func watchClose(c *websocket.Conn) <-chan closed {
	ch := make(chan closed, 1)
	go func() {
		err := closeOf(c, 30*time.Second)
		ch <- closed{time.Now(), err}
	}()
	return ch
}

func isTokenExpired(err error) bool {
	var ce websocket.CloseError
	return errors.As(err, &ce) && ce.Code == 4005 && ce.Reason == "token expired"
}

// TestAuthExpiry: a connection whose token expires is closed with 4005
// "token expired": an idle one at its exp; one sending a message at the end
// of that message, which is delivered whole; one whose message outlives
// --message-idle-timeout after exp at that time, its message abandoned.
func TestAuthExpiry(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	p := startAuthProc(t, "--message-idle-timeout", idle.String())
	long := func(sub string) *websocket.DialOptions { return bearer(mint(t, sub, time.Hour, "g")) }
	obs := mustDial(t, p, "id=observer&groupName=g", long("observer"))

	// Three short tokens (exp is in whole seconds: 1-2 s from now).
	tokIdle, tokEnd, tokCut := mint(t, "idle", 2*time.Second, "g"), mint(t, "ender", 2*time.Second, "g"), mint(t, "cutter", 2*time.Second, "g")
	exp := expOf(t, tokIdle)
	idleC := mustDial(t, p, "id=idle&groupName=g", bearer(tokIdle))
	endC := mustDial(t, p, "id=ender&groupName=g", bearer(tokEnd))
	cutC := mustDial(t, p, "id=cutter&groupName=g", bearer(tokCut))
	idleEnd := watchClose(idleC)
	endEnd := watchClose(endC)
	cutEnd := watchClose(cutC)

	// ender starts a message before exp and finishes it 0.5 s after.
	// cutter starts one and never finishes it (a fragment every 200 ms: no
	// stall). Fragments of 8 KiB: the library holds back smaller ones that
	// do not end a message.
	chunk := bytes.Repeat([]byte("x"), 8<<10)
	fragments := func(c *websocket.Conn, until time.Time, stop <-chan closed) (sent int, finished bool) {
		w, err := c.Writer(context.Background(), websocket.MessageText)
		if err != nil {
			return 0, false
		}
		for time.Now().Before(until) {
			if _, err := w.Write(chunk); err != nil {
				return sent, false
			}
			sent++
			select {
			case <-stop:
				return sent, false
			case <-time.After(200 * time.Millisecond):
			}
		}
		return sent, w.Close() == nil
	}
	type result struct {
		sent     int
		finished bool
		at       time.Time
	}
	endDone, cutDone := make(chan result, 1), make(chan result, 1)
	go func() {
		n, ok := fragments(endC, exp.Add(500*time.Millisecond), nil)
		endDone <- result{n, ok, time.Now()}
	}()
	stopCut := make(chan closed)
	go func() {
		n, ok := fragments(cutC, exp.Add(time.Minute), stopCut)
		cutDone <- result{n, ok, time.Now()}
	}()

	// The idle member: closed at exp.
	got := <-idleEnd
	if !isTokenExpired(got.err) {
		t.Errorf("idle member: %v, want 4005 token expired", got.err)
	}
	if d := got.at.Sub(exp); d < -50*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle member closed %v after exp", d)
	}
	t.Logf("idle member closed %v after exp", got.at.Sub(exp).Round(time.Millisecond))

	// ender: its message arrives whole, then it is closed.
	end := <-endDone
	if !end.finished {
		t.Fatalf("ender could not finish its message (%d fragments)", end.sent)
	}
	if _, msg := receive(t, obs); !bytes.Equal(msg, bytes.Repeat(chunk, end.sent)) {
		t.Errorf("observer got %d bytes of ender's message, want %d", len(msg), end.sent*len(chunk))
	}
	got = <-endEnd
	if !isTokenExpired(got.err) {
		t.Errorf("ender: %v, want 4005 token expired", got.err)
	}
	// At the boundary: well before the idle timeout would have cut it.
	if got.at.Before(end.at.Add(-100*time.Millisecond)) || got.at.Sub(end.at) > 1500*time.Millisecond {
		t.Errorf("ender closed %v after its message ended", got.at.Sub(end.at))
	}

	// cutter: closed about --message-idle-timeout after exp, mid-message.
	got = <-cutEnd
	close(stopCut)
	cut := <-cutDone
	if !isTokenExpired(got.err) {
		t.Errorf("cutter: %v, want 4005 token expired", got.err)
	}
	if d := got.at.Sub(exp); d < idle-100*time.Millisecond || d > idle+3*time.Second {
		t.Errorf("cutter closed %v after exp, want about %v", d, idle)
	}
	t.Logf("cutter closed %v after exp, after %d fragments", got.at.Sub(exp).Round(time.Millisecond), cut.sent)
	// None of cutter's message reached the observer: the next message it
	// gets is this one.
	send(t, mustDial(t, p, "id=marker&groupName=g", long("marker")), websocket.MessageText, []byte("marker"))
	if _, msg := receive(t, obs); string(msg) != "marker" {
		t.Errorf("observer got %q, want the marker", msg)
	}
}

// testCert writes a self-signed certificate for 127.0.0.1 with serial to
// certFile and keyFile (through a rename, as a renewal would) and returns it.
func testCert(t testing.TB, dir string, serial int64) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "wsproxy test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, block := range map[string]*pem.Block{
		"key.pem":  {Type: "PRIVATE KEY", Bytes: kder},
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
	} {
		tmp := filepath.Join(dir, name+".new")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestTLS serves wss:// with a certificate the test makes: clients that
// trust it exchange text and a streamed message, with a token; TLS 1.1 is
// refused; a certificate written over the files is served to new
// connections without a restart while the old connections go on.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := testCert(t, dir, 1)
	p := startAuthProc(t, "--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--buffer-bytes", "64KiB")
	if !strings.HasPrefix(p.base, "https://") {
		t.Fatalf("base %s", p.base)
	}
	roots := x509.NewCertPool()
	roots.AddCert(first)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	opts := func(sub string) *websocket.DialOptions {
		o := bearer(mint(t, sub, time.Hour, "secure"))
		o.HTTPClient = client
		return o
	}
	a := mustDial(t, p, "id=a&groupName=secure", opts("a"))
	b := mustDial(t, p, "id=b&groupName=secure", opts("b"))
	exchange := func(what string) {
		t.Helper()
		waitMembers(t, p, "", "secure", "a", "b")
		send(t, a, websocket.MessageText, []byte(what))
		if _, got := receive(t, b); string(got) != what {
			t.Fatalf("b got %q", got)
		}
		big := make([]byte, 1<<20+7) // streamed: over --buffer-bytes
		_, _ = rand.Read(big)
		done := make(chan struct{})
		go func() { defer close(done); send(t, b, websocket.MessageBinary, big) }()
		if typ, got := receive(t, a); typ != websocket.MessageBinary || !bytes.Equal(got, big) {
			t.Fatalf("a got %v, %d bytes, want the 1 MiB message", typ, len(got))
		}
		<-done
	}
	exchange("over wss")

	// The container health check works over TLS on loopback.
	if err := run(context.Background(), []string{"healthcheck", "--url", p.base + "/healthz"}, env(nil), io.Discard, io.Discard); err != nil {
		t.Errorf("healthcheck over TLS: %v", err)
	}
	// Nothing below TLS 1.2.
	if c, err := tls.Dial("tcp", p.addr(), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// An untrusting client is refused.
	if _, _, err := dialWS(t, p, "id=c&groupName=secure", bearer(mint(t, "c", time.Hour, "secure"))); err == nil {
		t.Error("a client that does not trust the certificate connected")
	}

	// Renewal: a new certificate over the same files.
	second := testCert(t, dir, 2)
	roots.AddCert(second)
	waitFor(t, 15*time.Second, "the new certificate to be served", func() bool {
		c, err := tls.Dial("tcp", p.addr(), &tls.Config{RootCAs: roots})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() == 2
	})
	// Old connections go on; new ones get the new certificate.
	exchange("after the renewal")
	only2 := x509.NewCertPool()
	only2.AddCert(second)
	o := bearer(mint(t, "d", time.Hour, "secure"))
	o.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: only2}, DisableKeepAlives: true}}
	mustDial(t, p, "id=d&groupName=secure", o)
	if !strings.Contains(p.logText(), "tls: certificate reloaded") {
		t.Error("the reload was not logged")
	}
}

// TestTokenCommand: proxy token mints a token the proxy accepts, and
// refuses bad input with a clear error.
func TestTokenCommand(t *testing.T) {
	t.Parallel()
	secret := writeTemp(t, "secret", testSecret)
	var out bytes.Buffer
	err := run(context.Background(), []string{"token", "--secret-file", secret, "--sub", "alice", "--groups", "room-*, lobby", "--ttl", "1h"},
		env(nil), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	v, err := auth.Load(auth.Options{SecretFiles: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	c, rej := v.Verify(tok, time.Now())
	if rej != nil {
		t.Fatalf("minted token refused: %v", rej)
	}
	if c.Subject != "alice" || !c.Allows("room-1") || !c.Allows("lobby") || c.Allows("roomx") {
		t.Errorf("claims %+v", c)
	}
	if d := time.Until(c.ExpiresAt.Time); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires in %v", d)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sub", "a", "--groups", "*"}, "--secret-file"},
		{[]string{"--secret-file", secret, "--groups", "*"}, "--sub"},
		{[]string{"--secret-file", secret, "--sub", "a b", "--groups", "*"}, "--sub"},
		{[]string{"--secret-file", secret, "--sub", "a"}, "--groups"},
		{[]string{"--secret-file", secret, "--sub", "a", "--groups", "*", "--ttl", "-1h"}, "--ttl"},
		{[]string{"--secret-file", writeTemp(t, "short", "short"), "--sub", "a", "--groups", "*"}, "32 bytes"},
		{[]string{"--secret-file", filepath.Join(t.TempDir(), "none"), "--sub", "a", "--groups", "*"}, "no such file"},
	} {
		err := run(context.Background(), append([]string{"token"}, tc.args...), env(nil), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token %q: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
