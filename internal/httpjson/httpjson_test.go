package httpjson

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestErrorNotHTMLEscaped: an error body is constant text for a person to
// read: "<", ">" and "&" are written as they are, not as \u003c and friends.
func TestErrorNotHTMLEscaped(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Error(rec, http.StatusUnauthorized, "missing or invalid admin token: send Authorization: Bearer <token> & retry")
	if got, want := rec.Body.String(), `{"error":"missing or invalid admin token: send Authorization: Bearer <token> & retry"}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status %d", rec.Code)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
}

// TestWriteEscapesHTML: data, which may hold names clients chose, keeps
// Go's HTML escaping.
func TestWriteEscapesHTML(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Write(rec, http.StatusOK, map[string]string{"name": "<b>salle</b> & co"})
	if got, want := rec.Body.String(), `{"name":"\u003cb\u003esalle\u003c/b\u003e \u0026 co"}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}
