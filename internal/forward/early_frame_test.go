package forward

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// A client may send its first message in the same TCP segment as its
// handshake request: those bytes, read by net/http along with the request,
// must still reach the WebSocket reader.
func TestFrameSentWithTheHandshake(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	b := dial(t, ts, "b", "early")
	addr := strings.TrimPrefix(ts.http.URL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /?id=a&groupName=early HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	frame := []byte{0x81, 0x85, 1, 2, 3, 4}
	for i, ch := range []byte("early") {
		frame = append(frame, ch^[]byte{1, 2, 3, 4}[i%4])
	}
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("handshake: %q %v", status, err)
	}
	if _, got := readMsg(t, b, 5*time.Second); string(got) != "early" {
		t.Fatalf("got %q", got)
	}
}
