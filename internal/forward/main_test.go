package forward

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive its tests: every session's
// reader, writer and keepalive must have an owner that waits for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
