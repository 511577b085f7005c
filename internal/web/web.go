// Package web serves the browser page at / (SPEC section 8): one
// self-contained HTML file, embedded in the binary, that joins a group over
// /ws, sends text and files, and shows what arrives.
//
// The page's script and style are inline; the Content-Security-Policy allows
// exactly those two blocks (by SHA-256 hash) and WebSocket connections to the
// page's own origin, and nothing else.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"time"
)

//go:embed index.html
var page []byte

// csp is computed once from the embedded page.
var csp = "default-src 'none'; " +
	"script-src '" + inlineHash(page, "<script>", "</script>") + "'; " +
	"style-src '" + inlineHash(page, "<style>", "</style>") + "'; " +
	"connect-src 'self'; img-src data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHash is the CSP source expression for the content between the first
// open and close tags. It panics if they are missing: the page is embedded,
// so that is a build mistake caught by any test.
func inlineHash(doc []byte, open, close string) string {
	_, rest, ok := bytes.Cut(doc, []byte(open))
	if !ok {
		panic("web: index.html has no " + open)
	}
	body, _, ok := bytes.Cut(rest, []byte(close))
	if !ok {
		panic("web: index.html has no " + close)
	}
	sum := sha256.Sum256(body)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// started stands in for the page's modification time: the page changes only
// with the binary.
var started = time.Now()

// Handler serves the page for GET and HEAD.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", started, bytes.NewReader(page))
	})
}
