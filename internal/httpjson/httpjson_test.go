package httpjson

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestNoHTMLEscaping: a JSON body is JSON, not HTML: "<", ">" and "&" are
// written as they are, not as \u003c and friends, and the headers keep a
// browser from treating the body as HTML.
func TestNoHTMLEscaping(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Error(rec, http.StatusBadRequest, "groupName must be <= 128 bytes & valid UTF-8")
	if got, want := rec.Body.String(), `{"error":"groupName must be <= 128 bytes & valid UTF-8"}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if rec.Code != http.StatusBadRequest {
		t.Errorf("status %d", rec.Code)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}

	rec = httptest.NewRecorder()
	Write(rec, http.StatusOK, map[string]string{"name": "<b>salle</b>"})
	if got, want := rec.Body.String(), `{"name":"<b>salle</b>"}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}
