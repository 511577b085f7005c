package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestServesPage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, page) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	for h, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'",
	} {
		if got := resp.Header.Get(h); !strings.HasPrefix(got, want) {
			t.Errorf("%s = %q, want %q...", h, got, want)
		}
	}

	req, _ := http.NewRequest(http.MethodHead, srv.URL, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}
}

// The CSP allows exactly the page's one script and one style block. Anything
// else inline (event handler or style attributes, a second block) would be
// blocked by the browser, and nothing may come from elsewhere.
func TestPageMatchesCSP(t *testing.T) {
	s := string(page)
	for _, tag := range []string{"<script", "<style"} {
		if n := strings.Count(s, tag); n != 1 {
			t.Errorf("%d %s blocks, want 1", n, tag)
		}
	}
	for _, block := range []struct{ open, close string }{{"<script>", "</script>"}, {"<style>", "</style>"}} {
		start := strings.Index(s, block.open) + len(block.open)
		end := strings.Index(s, block.close)
		sum := sha256.Sum256([]byte(s[start:end]))
		want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s for the %s block", csp, want, block.open)
		}
	}
	if m := regexp.MustCompile(`(?i)<[^>]+\s(on[a-z]+|style)\s*=`).FindString(s); m != "" {
		t.Errorf("inline attribute the CSP blocks: %s", m)
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(s); m != "" {
		t.Errorf("external resource: %s", m)
	}
	if strings.Contains(s, "innerHTML") || strings.Contains(s, "insertAdjacentHTML") || strings.Contains(s, "document.write") {
		t.Error("the page must build its DOM with textContent, not HTML strings")
	}
}
