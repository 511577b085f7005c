// Package httpjson writes JSON responses and the proxy's JSON error shape,
// {"error": "..."}.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write sends v as JSON with the given status. "<", ">" and "&" in strings
// are escaped (\u003c...): v may hold what clients chose (group names), and
// the escaping keeps such a body inert wherever it ends up.
func Write(w http.ResponseWriter, status int, v any) {
	write(w, status, v, true)
}

// Error sends {"error": msg} with the given status. msg must not contain raw
// user input. It is written as it is, not HTML-escaped, so that a reader
// sees "Bearer <token>", not "Bearer \u003ctoken\u003e".
func Error(w http.ResponseWriter, status int, msg string) {
	write(w, status, struct {
		Error string `json:"error"`
	}{msg}, false)
}

func write(w http.ResponseWriter, status int, v any, escapeHTML bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(v)
}
