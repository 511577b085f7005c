package forward

import (
	"bytes"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestSmokeFanOut(t *testing.T) {
	ts := startServer(t)
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	c := dial(t, ts, "c", "g")
	writeMsg(t, a, websocket.MessageText, []byte("hello"))
	for _, r := range []*websocket.Conn{b, c} {
		typ, got := readMsg(t, r, 2*time.Second)
		if typ != websocket.MessageText || !bytes.Equal(got, []byte("hello")) {
			t.Fatalf("got %v %q", typ, got)
		}
	}
	big := bytes.Repeat([]byte("x"), 5<<20)
	writeMsg(t, b, websocket.MessageBinary, big)
	for _, r := range []*websocket.Conn{a, c} {
		typ, got := readMsg(t, r, 5*time.Second)
		if typ != websocket.MessageBinary || !bytes.Equal(got, big) {
			t.Fatalf("got %v len %d", typ, len(got))
		}
	}
}
