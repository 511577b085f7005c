package version

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	module := func(v string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/wsproxy/wsproxy", Version: v}}
	}
	tests := []struct {
		name string
		tag  string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"linker tag wins", "v0.1.0-3-gabcdef1", module("v0.1.0"), true, "v0.1.0-3-gabcdef1"},
		{"go install @version", "", module("v0.1.0"), true, "v0.1.0"},
		{"go build in a checkout", "", module("v0.0.0-20260102150405-abcdef123456+dirty"), true, "v0.0.0-20260102150405-abcdef123456+dirty"},
		{"go build without VCS", "", module("(devel)"), true, "dev"},
		{"no module version", "", module(""), true, "dev"},
		{"no build info", "", nil, false, "dev"},
	}
	for _, tt := range tests {
		if got := resolve(tt.tag, tt.bi, tt.ok); got != tt.want {
			t.Errorf("%s: resolve = %q, want %q", tt.name, got, tt.want)
		}
	}
}
