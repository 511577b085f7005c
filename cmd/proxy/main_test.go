package main

import (
	"testing"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

// TestMain fails the package if any goroutine outlives the tests, or if a
// message Buf or ring of the in-process proxies is still held after them.
func TestMain(m *testing.M) { leakcheck.Main(m) }
