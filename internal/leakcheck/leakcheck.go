// Package leakcheck fails a package's tests when they leave something
// behind: a goroutine, or a pooled message buffer or ring (package message)
// that was never released. A Buf whose last Release never comes is simply
// collected as garbage, so nothing else would notice: only a count does.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsproxy/wsproxy/internal/message"
)

// Timeout is how long Main waits, after the tests pass, for goroutines to
// end and references to be released: connections closed at the end of a test
// finish their close handshakes in the background, slowly on a busy machine.
const Timeout = 10 * time.Second

// Main runs m's tests and exits with their status. If they pass, it then
// fails the run, naming what is left, unless within Timeout no goroutine
// other than those opts ignore is left (goleak) and message.Live reports
// nothing held. Call it as the package's TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
func Main(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := check(Timeout, opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: after every test passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// check waits up to d for no leaked goroutine, then for no held Buf or
// ring. Goroutines come first: a session's writer that is still running
// still holds references it will release.
func check(d time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(d)
	for {
		err := goleak.Find(opts...) // itself retries for about half a second
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
	}
	for {
		bufs, rings := message.Live()
		if bufs == 0 && rings == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d message Bufs and %d Stream rings are still held (message.Live): "+
				"a Release or a Detach is missing", bufs, rings)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
