package forward

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/wsproxy/wsproxy/internal/auth"
)

// rejection is a refused handshake: an HTTP status, a message naming what is
// wrong (never echoing the input), and a metrics reason.
type rejection struct {
	status int
	msg    string
	reason string
}

func (r *rejection) Error() string { return r.msg }

// setHeader sets the headers the refusal's response must carry besides its
// JSON body: for a missing or unsupported Sec-WebSocket-Version, the version
// the proxy speaks (RFC 6455 section 4.4). Whoever writes the response calls
// it first.
func (r *rejection) setHeader(h http.Header) {
	if r.reason == reasonBadVersion {
		h.Set("Sec-WebSocket-Version", "13")
	}
	if r.status == http.StatusUnauthorized {
		// RFC 6750 section 3.
		if r.reason == auth.RefuseMissing.Reason {
			h.Set("WWW-Authenticate", `Bearer realm="wsproxy"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer realm="wsproxy", error="invalid_token"`)
		}
	}
}

// reasonBadVersion is the reason of a refusal for Sec-WebSocket-Version.
const reasonBadVersion = "bad_version"

const maxParamLen = 128

// parseParams extracts id and groupName from a raw query string (SPEC 2).
// With optionalID (authentication on) id may be missing: it comes back "".
func parseParams(rawQuery string, optionalID bool) (id, groupName string, rej *rejection) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", "", &rejection{http.StatusBadRequest, "malformed query string", "bad_query"}
	}
	// Without id, under authentication, the token's subject is the id.
	if !optionalID || len(q["id"]) > 0 {
		if id, rej = single(q, "id"); rej != nil {
			return "", "", rej
		}
		if !ValidID(id) {
			return "", "", &rejection{http.StatusBadRequest,
				"parameter id must be 1-128 characters of A-Z a-z 0-9 - _ . ~", "bad_id"}
		}
	}
	groupName, rej = single(q, "groupName")
	if rej != nil {
		return "", "", rej
	}
	if !ValidGroupName(groupName) {
		return "", "", &rejection{http.StatusBadRequest,
			"parameter groupName must be 1-128 bytes of valid UTF-8 without control characters", "bad_group"}
	}
	return id, groupName, nil
}

func single(q url.Values, name string) (string, *rejection) {
	switch vs := q[name]; len(vs) {
	case 0:
		return "", &rejection{http.StatusBadRequest, "parameter " + name + " is required", "missing_" + strings.ToLower(name)}
	case 1:
		return vs[0], nil
	default:
		return "", &rejection{http.StatusBadRequest, "parameter " + name + " must be given exactly once", "repeated_" + strings.ToLower(name)}
	}
}

// ValidID reports whether id is 1-128 characters of A-Z a-z 0-9 - _ . ~.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > maxParamLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
		default:
			return false
		}
	}
	return true
}

// ValidGroupName reports whether name is 1-128 bytes of valid UTF-8 with no
// control characters.
func ValidGroupName(name string) bool {
	if len(name) == 0 || len(name) > maxParamLen || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// checkOrigin allows requests without Origin (non-browser clients), requests
// from the proxy's own host, and origins matching one of patterns (host
// patterns as in path.Match, or scheme://host patterns), case-insensitively.
func checkOrigin(r *http.Request, patterns []string) *rejection {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return &rejection{http.StatusForbidden, "Origin header is not a valid origin", "bad_origin"}
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, err := path.Match(strings.ToLower(p), strings.ToLower(target)); err == nil && ok {
			return nil
		}
	}
	return &rejection{http.StatusForbidden, "origin not allowed; see --allowed-origins", "origin"}
}

// checkUpgrade refuses what is not a WebSocket handshake with a JSON body
// before the library sees it: everything the library's own check refuses (it
// answers in plain text, quoting the request's headers).
func checkUpgrade(r *http.Request) *rejection {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return &rejection{http.StatusUpgradeRequired, "a WebSocket upgrade is required on /ws", "not_upgrade"}
	}
	if !r.ProtoAtLeast(1, 1) {
		return &rejection{http.StatusUpgradeRequired, "a WebSocket upgrade needs HTTP/1.1", "not_upgrade"}
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return &rejection{http.StatusBadRequest, "Sec-WebSocket-Version must be 13", reasonBadVersion}
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) == 0 || keys[0] == "" {
		return &rejection{http.StatusBadRequest, "Sec-WebSocket-Key is required", "bad_key"}
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); len(keys) > 1 || err != nil || len(k) != 16 {
		return &rejection{http.StatusBadRequest, "Sec-WebSocket-Key must be one base64-encoded 16-byte value", "bad_key"}
	}
	return nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
