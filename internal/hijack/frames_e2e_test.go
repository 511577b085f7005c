package hijack_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// A message framed by hand in fragments, over two WriteFrames calls, reads
// as one message in a real client: the headers are what the library
// expects.
func TestWriteFramesFragmentedMessage(t *testing.T) {
	t.Parallel()
	url, done := serve(t, func(c *websocket.Conn, nc *hijack.Conn) error {
		bufs := net.Buffers{hijack.AppendFrameHeader(nil, hijack.OpText, false, 3), []byte("hel")}
		if err := nc.WriteFrames(&bufs); err != nil {
			return err
		}
		big := make([]byte, 70000)
		bufs = net.Buffers{
			hijack.AppendFrameHeader(nil, hijack.OpContinuation, false, 0),
			hijack.AppendFrameHeader(nil, hijack.OpContinuation, false, len(big)), big,
			hijack.AppendFrameHeader(nil, hijack.OpContinuation, true, 2), []byte("lo"),
		}
		if err := nc.WriteFrames(&bufs); err != nil {
			return err
		}
		_, _, _ = c.Read(context.Background()) // until the client hangs up
		return nil
	})
	c := dial(t, url)
	c.SetReadLimit(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.MessageText || len(b) != 70005 || string(b[:3]) != "hel" || string(b[70003:]) != "lo" {
		t.Fatalf("read %v message of %d bytes", typ, len(b))
	}
	c.CloseNow()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}
