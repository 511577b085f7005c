package metrics

import (
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The per-message methods run for every message and every delivery: they must
// not allocate.
func TestHotPathAllocs(t *testing.T) {
	m := New()
	for name, f := range map[string]func(){
		"Received":  func() { m.Received(websocket.MessageText, 100) },
		"Delivered": func() { m.Delivered(websocket.MessageBinary, 100, time.Millisecond) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %.1f times per call", name, n)
		}
	}
}
