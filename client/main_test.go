package client_test

import (
	"testing"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain fails the package if a goroutine (the client's or the in-process
// proxy's) outlives the tests.
func TestMain(m *testing.M) { leakcheck.Main(m) }
