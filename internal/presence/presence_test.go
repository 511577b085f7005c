package presence

import (
	"net"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wsproxy/wsproxy/internal/group"
	"github.com/wsproxy/wsproxy/internal/hijack"
	"github.com/wsproxy/wsproxy/internal/metrics"
	"github.com/wsproxy/wsproxy/internal/session"
)

func newSession(tb testing.TB, id, groupName string) *session.Session {
	tb.Helper()
	a, b := net.Pipe()
	tb.Cleanup(func() { a.Close(); b.Close() })
	return session.New(nil, hijack.NewConn(a, 0), id, groupName, session.Config{QueueBytes: 1 << 20}, zerolog.Nop(), metrics.New())
}

func TestParseSince(t *testing.T) {
	for in, want := range map[string]*Since{
		"9f3a61c2-4:41": {"9f3a61c2-4", 41},
		"e:0":           {"e", 0},
		"a:b:7":         {"a:b", 7},
		"x":             nil,
		":3":            nil,
		"e:":            nil,
		"e:-1":          nil,
		"e:1x":          nil,
	} {
		got, err := ParseSince(in)
		if (err == nil) != (want != nil) || (want != nil && got != *want) {
			t.Errorf("ParseSince(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// BenchmarkJoinLeave is one join and one leave of a group: with no hub, and
// with a hub and no group watched (what presence costs when unused).
func BenchmarkJoinLeave(b *testing.B) {
	for _, mode := range []string{"no-hub", "hub-unwatched"} {
		b.Run(mode, func(b *testing.B) {
			r := group.NewRegistry()
			if mode != "no-hub" {
				New(r, Options{Linger: -1})
			}
			s := newSession(b, "a", "g")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				_, _, leave := r.Join(s)
				leave()
			}
		})
	}
}
