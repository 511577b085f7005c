package leakcheck

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/message"
)

func TestMain(m *testing.M) { Main(m) }

// check names each kind of leak, and passes once it is gone.
func TestCheck(t *testing.T) {
	const d = 50 * time.Millisecond
	if err := check(d); err != nil {
		t.Fatalf("nothing leaked: %v", err)
	}

	stop := make(chan struct{})
	go func() { <-stop }()
	if err := check(d); err == nil || !strings.Contains(err.Error(), "TestCheck") {
		t.Errorf("a goroutine left running: %v", err)
	}
	close(stop)

	b := message.GetBuf(10)
	if err := check(d); err == nil || !strings.Contains(err.Error(), "1 message Bufs and 0 Stream rings") {
		t.Errorf("a Buf never released: %v", err)
	}
	b.Release()

	st := message.NewStream(websocket.MessageText, message.NewRingPool(16, nil))
	c := st.Attach()
	st.Finish()
	if err := check(d); err == nil || !strings.Contains(err.Error(), "0 message Bufs and 1 Stream rings") {
		t.Errorf("a cursor never detached: %v", err)
	}
	c.Detach()

	if err := check(d); err != nil {
		t.Fatalf("after cleaning up: %v", err)
	}
}
