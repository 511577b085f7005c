package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

const secret = "0123456789abcdef0123456789abcdef-test-secret"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func publicPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func claims(sub string, groups []string, exp time.Duration) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "groups": groups, "iat": time.Now().Unix()}
	if exp != 0 {
		c["exp"] = time.Now().Add(exp).Unix()
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hmacVerifier(t *testing.T, opts Options) *Verifier {
	t.Helper()
	opts.SecretFiles = append([]string{writeFile(t, "secret", secret+"\n")}, opts.SecretFiles...)
	v, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantRefusal(t *testing.T, what string, got, want *Refusal) {
	t.Helper()
	if got != want {
		gs := "accepted"
		if got != nil {
			gs = got.Reason + ": " + got.Msg
		}
		t.Errorf("%s: %s, want %s (%d)", what, gs, want.Msg, want.Status)
	}
}

func TestVerifyHMAC(t *testing.T) {
	v := hmacVerifier(t, Options{})
	key := []byte(secret)
	good := sign(t, jwt.SigningMethodHS256, key, claims("alice", []string{"room-*"}, time.Hour))
	c, rej := v.Verify(good, time.Now())
	if rej != nil || c.Subject != "alice" || !c.Allows("room-1") {
		t.Fatalf("good token: %v %+v", rej, c)
	}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		if _, rej := v.Verify(sign(t, m, key, claims("alice", nil, time.Hour)), time.Now()); rej != nil {
			t.Errorf("%s: %v", m.Alg(), rej)
		}
	}

	parts := strings.Split(good, ".")
	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice", []string{"*"}, time.Hour))
	// A token whose header says none but keeps a signature.
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	cases := []struct {
		name, token string
		want        *Refusal
	}{
		{"not a JWT", "hello", RefuseMalformed},
		{"two parts", parts[0] + "." + parts[1], RefuseMalformed},
		{"bad base64", parts[0] + ".!!!." + parts[2], RefuseMalformed},
		{"bad signature", parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("forged signature bytes, 32 long")), RefuseInvalid},
		{"other secret", sign(t, jwt.SigningMethodHS256, []byte("another secret that is long enough!!"), claims("alice", nil, time.Hour)), RefuseInvalid},
		{"alg none", noneToken, RefuseInvalid},
		{"alg none, signature kept", noneHeader + "." + parts[1] + "." + parts[2], RefuseInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, key, claims("alice", nil, -time.Second)), RefuseExpired},
		{"expired long ago", sign(t, jwt.SigningMethodHS256, key, claims("alice", nil, -time.Hour)), RefuseExpired},
		{"no exp", sign(t, jwt.SigningMethodHS256, key, claims("alice", nil, 0)), RefuseInvalid},
		{"no sub", sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}), RefuseInvalid},
		{"nbf ahead", sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Add(time.Minute).Unix()}), RefuseNotYet},
		{"iat ahead", sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Add(time.Minute).Unix()}), RefuseNotYet},
		{"wrong exp type", sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "exp": "tomorrow"}), RefuseMalformed},
	}
	for _, tc := range cases {
		_, rej := v.Verify(tc.token, time.Now())
		wantRefusal(t, tc.name, rej, tc.want)
	}
	// The leeway covers nbf and iat, never exp.
	inLeeway := sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Add(2 * time.Second).Unix()})
	if _, rej := v.Verify(inLeeway, time.Now()); rej != nil {
		t.Errorf("nbf 2 s ahead (leeway %v): %v", Leeway, rej)
	}
	justExpired := sign(t, jwt.SigningMethodHS256, key, claims("a", nil, time.Hour))
	if _, rej := v.Verify(justExpired, time.Now().Add(time.Hour+time.Second)); rej != RefuseExpired {
		t.Errorf("token past its exp by 1 s: %v, want expired", rej)
	}
}

func TestRotation(t *testing.T) {
	const old = "the-previous-secret-0123456789abcdef"
	v := hmacVerifier(t, Options{SecretFiles: []string{writeFile(t, "old", old)}})
	for _, k := range []string{secret, old} {
		if _, rej := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(k), claims("a", nil, time.Hour)), time.Now()); rej != nil {
			t.Errorf("token signed with %.10s...: %v", k, rej)
		}
	}
	alone, err := Load(Options{SecretFiles: []string{writeFile(t, "s", secret)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, rej := alone.Verify(sign(t, jwt.SigningMethodHS256, []byte(old), claims("a", nil, time.Hour)), time.Now()); rej != RefuseInvalid {
		t.Errorf("previous secret not configured: %v", rej)
	}
}

func TestAudienceIssuer(t *testing.T) {
	v := hmacVerifier(t, Options{Audience: "wsproxy", Issuer: "https://id.example"})
	key := []byte(secret)
	mk := func(aud, iss string) string {
		c := claims("a", nil, time.Hour)
		if aud != "" {
			c["aud"] = aud
		}
		if iss != "" {
			c["iss"] = iss
		}
		return sign(t, jwt.SigningMethodHS256, key, c)
	}
	if _, rej := v.Verify(mk("wsproxy", "https://id.example"), time.Now()); rej != nil {
		t.Fatal(rej)
	}
	for name, tok := range map[string]string{
		"no aud": mk("", "https://id.example"), "wrong aud": mk("other", "https://id.example"),
		"no iss": mk("wsproxy", ""), "wrong iss": mk("wsproxy", "https://evil.example"),
	} {
		_, rej := v.Verify(tok, time.Now())
		wantRefusal(t, name, rej, RefuseInvalid)
	}
}

func TestPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		method jwt.SigningMethod
		key    any
	}{
		{"RSA", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"RSA-PSS", &rsaKey.PublicKey, jwt.SigningMethodPS256, rsaKey},
		{"ECDSA", &ecKey.PublicKey, jwt.SigningMethodES256, ecKey},
		{"Ed25519", edPub, jwt.SigningMethodEdDSA, edKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pemText := publicPEM(t, tc.pub)
			v, err := Load(Options{PublicKeyFile: writeFile(t, "pub.pem", pemText)})
			if err != nil {
				t.Fatal(err)
			}
			if _, rej := v.Verify(sign(t, tc.method, tc.key, claims("a", nil, time.Hour)), time.Now()); rej != nil {
				t.Fatalf("good token: %v", rej)
			}
			// The classic confusion: an HMAC token "signed" with the
			// public key's own bytes.
			for _, secretKey := range [][]byte{[]byte(pemText), []byte(secret)} {
				forged := sign(t, jwt.SigningMethodHS256, secretKey, claims("a", []string{"*"}, time.Hour))
				_, rej := v.Verify(forged, time.Now())
				wantRefusal(t, "HS256 token with a public key configured", rej, RefuseInvalid)
			}
			none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("a", []string{"*"}, time.Hour))
			_, rej := v.Verify(none, time.Now())
			wantRefusal(t, "alg none", rej, RefuseInvalid)
		})
	}
	// With both kinds of key, each verifies only its own algorithms.
	v := hmacVerifier(t, Options{PublicKeyFile: writeFile(t, "pub.pem", publicPEM(t, &ecKey.PublicKey))})
	if _, rej := v.Verify(sign(t, jwt.SigningMethodES256, ecKey, claims("a", nil, time.Hour)), time.Now()); rej != nil {
		t.Errorf("ES256 with both keys: %v", rej)
	}
	if _, rej := v.Verify(sign(t, jwt.SigningMethodHS256, []byte(secret), claims("a", nil, time.Hour)), time.Now()); rej != nil {
		t.Errorf("HS256 with both keys: %v", rej)
	}
	if _, rej := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, claims("a", nil, time.Hour)), time.Now()); rej != RefuseInvalid {
		t.Errorf("RS256 with an ECDSA key configured: %v", rej)
	}
}

func TestLoadErrors(t *testing.T) {
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, opts := range map[string]Options{
		"no key":         {},
		"missing file":   {SecretFiles: []string{filepath.Join(t.TempDir(), "nope")}},
		"short secret":   {SecretFiles: []string{writeFile(t, "s", "short")}},
		"not PEM":        {PublicKeyFile: writeFile(t, "k", "hello")},
		"private key":    {PublicKeyFile: writeFile(t, "k", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		"small RSA":      {PublicKeyFile: writeFile(t, "k", publicPEM(t, &smallRSA.PublicKey))},
		"garbage in PEM": {PublicKeyFile: writeFile(t, "k", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")},
	} {
		_, err := Load(opts)
		if err == nil {
			t.Errorf("%s: loaded", name)
			continue
		}
		if strings.Contains(err.Error(), "short") && name != "short secret" {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The error names the file, never the secret.
	_, err := Load(Options{SecretFiles: []string{writeFile(t, "s", "tiny-secret-value")}})
	if err == nil || strings.Contains(err.Error(), "tiny-secret-value") {
		t.Errorf("short secret error: %v", err)
	}
}

func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		group    string
		want     bool
	}{
		{[]string{"room-*"}, "room-1", true},
		{[]string{"room-*"}, "room-", true},
		{[]string{"room-*"}, "roomx", false},
		{[]string{"room-*"}, "room", false},
		{[]string{"room-*"}, "xroom-1", false},
		{[]string{"room-*"}, "Room-1", false},
		{[]string{"lobby"}, "lobby", true},
		{[]string{"lobby"}, "lobby2", false},
		{[]string{"lobby"}, "lobb", false},
		{[]string{"*"}, "anything at all", true},
		{[]string{"a*b"}, "axxb", false},
		{[]string{"a*b"}, "a*b", true},
		{[]string{"x", "room-*"}, "room-9", true},
		{nil, "lobby", false},
		{[]string{""}, "lobby", false},
	} {
		if got := Allowed(tc.patterns, tc.group); got != tc.want {
			t.Errorf("Allowed(%q, %q) = %v, want %v", tc.patterns, tc.group, got, tc.want)
		}
	}
	// groups as one string is a list of one.
	var c Claims
	if err := json.Unmarshal([]byte(`{"groups":"room-*"}`), &c); err != nil || !c.Allows("room-1") {
		t.Errorf("groups as a string: %v %v", err, c.Groups)
	}
}

func TestTokenFrom(t *testing.T) {
	req := func(target string, h ...string) *http.Request {
		r := httptest.NewRequest("GET", target, nil)
		for i := 0; i < len(h); i += 2 {
			r.Header.Add(h[i], h[i+1])
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
		rej  *Refusal
	}{
		{"none", req("/ws?id=a"), "", RefuseMissing},
		{"header", req("/ws", "Authorization", "Bearer h.h.h"), "h.h.h", nil},
		{"header, lower case", req("/ws", "Authorization", "bearer h.h.h"), "h.h.h", nil},
		{"basic is not a bearer", req("/ws?token=q.q.q", "Authorization", "Basic dXNlcjpwYXNz"), "q.q.q", nil},
		{"two headers", req("/ws", "Authorization", "Bearer a.a.a", "Authorization", "Bearer b.b.b"), "", RefuseMalformed},
		{"empty bearer", req("/ws", "Authorization", "Bearer "), "", RefuseMissing},
		{"subprotocol", req("/ws", "Sec-WebSocket-Protocol", "wsproxy, wsproxy.bearer.s.s.s"), "s.s.s", nil},
		{"subprotocol, two headers", req("/ws", "Sec-WebSocket-Protocol", "wsproxy.bearer.s.s.s", "Sec-WebSocket-Protocol", "wsproxy"), "s.s.s", nil},
		{"subprotocol without wsproxy", req("/ws", "Sec-WebSocket-Protocol", "wsproxy.bearer.s.s.s"), "", RefuseSubprotocol},
		{"two bearer subprotocols", req("/ws", "Sec-WebSocket-Protocol", "wsproxy, wsproxy.bearer.a, wsproxy.bearer.b"), "", RefuseMalformed},
		{"query", req("/ws?id=a&token=q.q.q"), "q.q.q", nil},
		{"query twice", req("/ws?token=a&token=b"), "", RefuseMalformed},
		{"header first", req("/ws?token=q.q.q", "Authorization", "Bearer h.h.h", "Sec-WebSocket-Protocol", "wsproxy, wsproxy.bearer.s.s.s"), "h.h.h", nil},
		{"subprotocol before query", req("/ws?token=q.q.q", "Sec-WebSocket-Protocol", "wsproxy, wsproxy.bearer.s.s.s"), "s.s.s", nil},
		{"bad query", req("/ws?token=%zz"), "", RefuseMalformed},
	} {
		got, rej := TokenFrom(tc.r)
		if got != tc.want || rej != tc.rej {
			t.Errorf("%s: %q %v, want %q %v", tc.name, got, rej, tc.want, tc.rej)
		}
	}
}

func TestAuthorize(t *testing.T) {
	v := hmacVerifier(t, Options{})
	tok, err := Mint([]byte(secret), "alice", []string{"room-*", "lobby"}, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/ws", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	for _, tc := range []struct {
		id, group string
		rej       *Refusal
	}{
		{"alice", "room-1", nil},
		{"", "lobby", nil},
		{"bob", "room-1", RefuseID},
		{"alice", "roomx", RefuseGroup},
		{"alice", "lobby2", RefuseGroup},
	} {
		g, rej := v.Authorize(r, tc.id, tc.group)
		if rej != tc.rej {
			t.Errorf("%q in %q: %v, want %v", tc.id, tc.group, rej, tc.rej)
		}
		if g.ID != "alice" {
			t.Errorf("%q in %q: grant for %q", tc.id, tc.group, g.ID)
		}
		if rej == nil && time.Until(g.Expires) < 59*time.Minute {
			t.Errorf("grant expires %v", g.Expires)
		}
	}
}

// BenchmarkAuthorize is the cost --auth=jwt adds to a handshake: the token
// taken from the query (the slowest source), verified (HS256), and its id
// and group checked.
func BenchmarkAuthorize(b *testing.B) {
	p := filepath.Join(b.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		b.Fatal(err)
	}
	v, err := Load(Options{SecretFiles: []string{p}})
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := Mint([]byte(secret), "m1", []string{"g0"}, time.Hour, "", "")
	r := httptest.NewRequest("GET", "/ws?groupName=g0&token="+tok, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, rej := v.Authorize(r, "", "g0"); rej != nil {
			b.Fatal(rej)
		}
	}
}

func TestMain(m *testing.M) { leakcheck.Main(m) }
