package forward

import (
	"testing"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain fails the package if goroutines outlive its tests (every session's
// reader, writer and keepalive must have an owner that waits for it) or if a
// message Buf or ring is still held once every connection has ended.
func TestMain(m *testing.M) { leakcheck.Main(m) }
