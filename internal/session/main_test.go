package session

import (
	"testing"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain fails the package if goroutines outlive its tests or a message Buf
// or ring is still held after them.
func TestMain(m *testing.M) { leakcheck.Main(m) }
