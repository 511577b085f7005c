package auth

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Subprotocol is the WebSocket subprotocol the proxy answers with when a
// client offers it. A browser, which cannot set an Authorization header on a
// WebSocket, sends its token as a second offered subprotocol,
// BearerPrefix + token; the proxy never answers with that one.
const (
	Subprotocol  = "wsproxy"
	BearerPrefix = "wsproxy.bearer."
)

// TokenFrom returns the token a request carries, from the first of: an
// Authorization: Bearer header; the subprotocol pair wsproxy and
// wsproxy.bearer.<token>; the query parameter token. A source given twice
// is malformed; a bearer subprotocol without wsproxy is refused with 400.
func TokenFrom(r *http.Request) (string, *Refusal) {
	var bearer []string
	for _, h := range r.Header.Values("Authorization") {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			bearer = append(bearer, strings.TrimSpace(tok))
		}
	}
	if len(bearer) > 0 {
		return one(bearer)
	}

	var offered bool
	bearer = bearer[:0]
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			p = strings.TrimSpace(p)
			if tok, ok := strings.CutPrefix(p, BearerPrefix); ok {
				bearer = append(bearer, tok)
			} else if p == Subprotocol {
				offered = true
			}
		}
	}
	if len(bearer) > 0 {
		if !offered {
			return "", RefuseSubprotocol
		}
		return one(bearer)
	}

	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", RefuseMalformed
	}
	if toks := q["token"]; len(toks) > 0 {
		return one(toks)
	}
	return "", RefuseMissing
}

func one(toks []string) (string, *Refusal) {
	if len(toks) != 1 {
		return "", RefuseMalformed
	}
	if toks[0] == "" {
		return "", RefuseMissing
	}
	return toks[0], nil
}

// Mint returns an HS256 token for sub that allows groups and expires after
// ttl; aud and iss are set when not empty. It is for development and tests
// (proxy token): production tokens come from the deployment's identity
// provider.
func Mint(secret []byte, sub string, groups []string, ttl time.Duration, aud, iss string) (string, error) {
	now := time.Now()
	// groups is always a JSON array here (ClaimStrings would write a list
	// of one as a plain string).
	c := struct {
		jwt.RegisteredClaims
		Groups []string `json:"groups"`
	}{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    iss,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Groups: groups,
	}
	if aud != "" {
		c.Audience = jwt.ClaimStrings{aud}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
