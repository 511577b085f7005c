// Package version says which build of wsproxy is running.
//
// `make` sets the version from `git describe` at link time:
//
//	go build -ldflags "-X github.com/wsproxy/wsproxy/internal/version.tag=v0.1.0" ./cmd/proxy
//
// Without it, the version is the one the Go toolchain recorded in the binary:
// the module version for `go install github.com/wsproxy/wsproxy/cmd/proxy@v0.1.0`,
// and for `go build` in a git checkout the tag of the commit (or a pseudo-version
// such as v0.0.0-20260102150405-abcdef123456, with +dirty for local changes).
// A build that has neither says "dev".
package version

import "runtime/debug"

// tag is set by the linker (-X); empty otherwise.
var tag string

// String is the version of this build.
func String() string {
	bi, ok := debug.ReadBuildInfo()
	return resolve(tag, bi, ok)
}

func resolve(tag string, bi *debug.BuildInfo, ok bool) string {
	if tag != "" {
		return tag
	}
	if ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
