// Package httpjson writes JSON responses and the proxy's JSON error shape,
// {"error": "..."}.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write sends v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON, not HTML: "<" stays "<"; nosniff keeps browsers from sniffing HTML
	_ = enc.Encode(v)
}

// Error sends {"error": msg} with the given status. msg must not contain raw
// user input.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, struct {
		Error string `json:"error"`
	}{msg})
}
