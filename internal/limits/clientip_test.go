package limits

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted, err := ParsePrefixes("10.0.0.0/8, 192.168.1.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		remote string
		xff    []string // one header line each
		want   string
	}{
		{"untrusted peer, no header", "203.0.113.7:4000", nil, "203.0.113.7"},
		{"untrusted peer: spoofed header ignored", "203.0.113.7:4000", []string{"1.1.1.1"}, "203.0.113.7"},
		{"trusted peer, no header", "10.1.2.3:80", nil, "10.1.2.3"},
		{"trusted peer", "10.1.2.3:80", []string{"198.51.100.4"}, "198.51.100.4"},
		{"rightmost untrusted wins over client-written entries", "10.1.2.3:80",
			[]string{"6.6.6.6, 198.51.100.4, 10.9.9.9"}, "198.51.100.4"},
		{"several header lines read as one list", "10.1.2.3:80",
			[]string{"6.6.6.6, 198.51.100.4", "192.168.1.1"}, "198.51.100.4"},
		{"every entry trusted: the leftmost", "10.1.2.3:80", []string{"10.5.5.5, 192.168.1.1"}, "10.5.5.5"},
		{"ports and spaces", "10.1.2.3:80", []string{" 198.51.100.4:5555 ,10.2.2.2:1"}, "198.51.100.4"},
		{"IPv6 with brackets and port", "10.1.2.3:80", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv6 in brackets", "10.1.2.3:80", []string{"[2001:db8::1]"}, "2001:db8::1"},
		{"IPv4-mapped entry unmapped", "10.1.2.3:80", []string{"::ffff:198.51.100.4"}, "198.51.100.4"},
		{"IPv4-mapped trusted peer", "[::ffff:10.1.2.3]:80", []string{"198.51.100.4"}, "198.51.100.4"},
		{"IPv4-mapped untrusted peer unmapped", "[::ffff:203.0.113.7]:80", nil, "203.0.113.7"},
		{"IPv6 trusted peer", "[fd00::5]:80", []string{"2001:db8::9"}, "2001:db8::9"},
		{"zone dropped", "10.1.2.3:80", []string{"fe80::1%eth0"}, "fe80::1"},
		{"empty entries skipped", "10.1.2.3:80", []string{"198.51.100.4,, ,"}, "198.51.100.4"},
		{"malformed rightmost: the socket", "10.1.2.3:80", []string{"198.51.100.4, nonsense"}, "10.1.2.3"},
		{"malformed behind trusted: the socket", "10.1.2.3:80", []string{"bad, 10.7.7.7"}, "10.1.2.3"},
		{"malformed left of the answer is never read", "10.1.2.3:80", []string{"bad, 198.51.100.4"}, "198.51.100.4"},
		{"empty header", "10.1.2.3:80", []string{""}, "10.1.2.3"},
		{"hostname: the socket", "10.1.2.3:80", []string{"example.com"}, "10.1.2.3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientIP(r, trusted); got != netip.MustParseAddr(c.want) {
				t.Errorf("ClientIP = %v, want %s", got, c.want)
			}
		})
	}
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.RemoteAddr = "198.51.100.4:1"
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	if got := ClientIP(r, nil); got != netip.MustParseAddr("198.51.100.4") {
		t.Errorf("no trusted proxies: ClientIP = %v, want the socket's", got)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes(" 10.0.0.0/8,192.168.1.7, ,2001:db8::/32 ,::1, ::ffff:172.16.0.0/108, 10.1.2.3/8")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128", "172.16.0.0/12", "10.0.0.0/8"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("entry %d = %v, want %s", i, got[i], want[i])
		}
	}
	if p, err := ParsePrefixes(""); err != nil || len(p) != 0 {
		t.Errorf(`ParsePrefixes("") = %v, %v`, p, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.0/8;", "1.2.3", "fe80::1%eth0", "10.0.0.0/8,x"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
}

// FuzzClientIP: whatever the header holds, ClientIP returns a valid address
// that is the socket's or one written in the header, never panics, and
// ignores the header from an untrusted socket.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"", "1.2.3.4", "1.2.3.4, 10.0.0.1", "[::1]:5,,", "::ffff:1.2.3.4", "a,b,c", "[", "]", "%", ",,,,"} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.Header.Set("X-Forwarded-For", xff)
		r.RemoteAddr = "10.0.0.1:1"
		got := ClientIP(r, trusted)
		if !got.IsValid() || got.Is4In6() || got.Zone() != "" {
			t.Fatalf("ClientIP = %v", got)
		}
		if got != netip.MustParseAddr("10.0.0.1") && !strings.Contains(xff, got.String()) && !strings.Contains(strings.ToLower(xff), got.String()) {
			// An entry may be written differently (mapped, zoned, long
			// form): it must at least parse from some entry.
			found := false
			for _, e := range strings.Split(xff, ",") {
				if ip, err := ParseAddr(strings.TrimSpace(e)); err == nil && ip == got {
					found = true
				}
			}
			if !found {
				t.Fatalf("ClientIP = %v, from neither the socket nor the header %q", got, xff)
			}
		}
		r.RemoteAddr = "203.0.113.1:1"
		if got := ClientIP(r, trusted); got != netip.MustParseAddr("203.0.113.1") {
			t.Fatalf("untrusted socket: ClientIP = %v", got)
		}
	})
}
