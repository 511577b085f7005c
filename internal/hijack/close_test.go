package hijack_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// readRest reads what the peer gets until the Conn's socket is closed.
func readRest(t *testing.T, c *hijack.Conn, peer net.Conn) []byte {
	t.Helper()
	c.Close()
	b, err := io.ReadAll(peer)
	if err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal(err)
	}
	return b
}

// TestWriteClose: WriteClose writes one close frame; after it, no frame goes
// out: the library's writes are dropped as if written, WriteFrames and
// WriteClose refuse.
func TestWriteClose(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 5*time.Second)
	if c.CloseSent() {
		t.Fatal("CloseSent before any close frame")
	}
	if err := c.WriteClose(1001, "going away"); err != nil {
		t.Fatal(err)
	}
	if !c.CloseSent() {
		t.Fatal("CloseSent is false after WriteClose")
	}
	if err := c.WriteClose(1000, ""); !errors.Is(err, hijack.ErrCloseSent) {
		t.Fatalf("a second WriteClose: %v, want ErrCloseSent", err)
	}
	bufs := net.Buffers{hijack.AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); !errors.Is(err, hijack.ErrCloseSent) {
		t.Fatalf("WriteFrames after WriteClose: %v, want ErrCloseSent", err)
	}
	libClose := []byte{0x88, 0x02, 0x03, 0xe9}
	if n, err := c.Write(libClose); n != len(libClose) || err != nil {
		t.Fatalf("the library's close frame after WriteClose: %d, %v; want it reported written", n, err)
	}
	want := append([]byte{0x88, 12, 0x03, 0xe9}, "going away"...)
	if got := readRest(t, c, peer); !bytes.Equal(got, want) {
		t.Fatalf("the peer got %q, want only %q", got, want)
	}
}

// TestWriteCloseRefuses: WriteClose writes nothing with a reason too long,
// inside a frame the library is writing, or after AbortWrites, and none of
// these counts as a close frame sent.
func TestWriteCloseRefuses(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 5*time.Second)
	if err := c.WriteClose(1000, strings.Repeat("x", 124)); err == nil {
		t.Fatal("WriteClose with a 124-byte reason succeeded")
	}
	half := []byte{0x02, 10, 1, 2, 3, 4} // 10 bytes announced, 4 written
	if _, err := c.Write(half); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteClose(1000, ""); !errors.Is(err, hijack.ErrMidFrame) {
		t.Fatalf("WriteClose inside a library frame: %v, want ErrMidFrame", err)
	}
	c.AbortWrites()
	if err := c.WriteClose(1000, ""); !errors.Is(err, hijack.ErrWritesAborted) {
		t.Fatalf("WriteClose after AbortWrites: %v, want ErrWritesAborted", err)
	}
	if c.CloseSent() {
		t.Fatal("CloseSent with no close frame written")
	}
	if got := readRest(t, c, peer); !bytes.Equal(got, half) {
		t.Fatalf("the peer got %q, want only %q", got, half)
	}
}

// TestCloseSentOnlyWhole: a close frame the peer took only part of does not
// count as sent, but nothing may follow it either.
func TestCloseSentOnlyWhole(t *testing.T) {
	t.Parallel()
	c, peer := pipe(t, 50*time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- c.WriteClose(1001, "going away") }()
	if _, err := io.ReadFull(peer, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, errc); !isTimeout(err) {
		t.Fatalf("a close frame the peer stopped reading: %v, want a timeout", err)
	}
	if c.CloseSent() {
		t.Fatal("CloseSent after 3 bytes of a close frame")
	}
	if n, err := c.Write([]byte{0x8a, 0x00}); n != 2 || err != nil {
		t.Fatalf("a library write after part of a close frame: %d, %v; want it dropped as written", n, err)
	}
	if err := c.WriteClose(1000, ""); !errors.Is(err, hijack.ErrCloseSent) {
		t.Fatalf("WriteClose after part of a close frame: %v, want ErrCloseSent", err)
	}
	bufs := net.Buffers{hijack.AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); !errors.Is(err, hijack.ErrCloseSent) {
		t.Fatalf("WriteFrames after part of a close frame: %v, want ErrCloseSent", err)
	}
}

// TestLibraryCloseFrameCounts: a close frame the library writes is followed
// like WriteClose's, and nothing the same Write carries after it goes out.
func TestLibraryCloseFrameCounts(t *testing.T) {
	t.Parallel()
	s, peer := tcpPair(t)
	c := hijack.NewConn(s, 5*time.Second)
	closeFrame := []byte{0x88, 0x02, 0x03, 0xe8}
	p := append(append([]byte{}, closeFrame...), 0x89, 0x00) // then a ping
	if n, err := c.Write(p); n != len(p) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if !c.CloseSent() {
		t.Fatal("the library's close frame does not count")
	}
	if err := c.WriteClose(1000, ""); !errors.Is(err, hijack.ErrCloseSent) {
		t.Fatalf("WriteClose after the library's close frame: %v, want ErrCloseSent", err)
	}
	if got := readRest(t, c, peer); !bytes.Equal(got, closeFrame) {
		t.Fatalf("the peer got %x, want only %x", got, closeFrame)
	}
}

// TestWriteCloseThenLibraryClose: the proxy writes the close frame, then
// the library's Close, whose own close frame is dropped, waits for the
// peer's answer and returns cleanly; the peer sees one close frame.
func TestWriteCloseThenLibraryClose(t *testing.T) {
	t.Parallel()
	url, done := serve(t, func(c *websocket.Conn, nc *hijack.Conn) error {
		if err := nc.WriteClose(1001, "bye"); err != nil {
			return err
		}
		// Close reads the peer's close frame itself: no Reader.
		return c.Close(websocket.StatusGoingAway, "bye")
	})
	rc := dialRaw(t, url)
	f, err := rc.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x03, 0xe9}, "bye"...)
	if f.b0 != 0x88 || !bytes.Equal(f.payload, want) {
		t.Fatalf("first frame %x %q, want close 1001 bye", f.b0, f.payload)
	}
	rc.write(clientFrame(0x88, want))
	if rest := rc.readAll(); len(rest) != 0 {
		t.Fatalf("after the close frame the server sent %d more frames, the first %x %q", len(rest), rest[0].b0, rest[0].payload)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("the library's Close after WriteClose: %v", err)
	}
}

// TestCloseFrameNotTaken: a close frame the socket took none of counts for
// nothing: another may still go out.
func TestCloseFrameNotTaken(t *testing.T) {
	t.Parallel()
	c, peer := pipe(t, 50*time.Millisecond)
	if n, err := c.Write([]byte{0x88, 0x02, 0x03, 0xe8}); n != 0 || !isTimeout(err) {
		t.Fatalf("the library's close frame to a peer that reads nothing: %d, %v; want 0, a timeout", n, err)
	}
	if c.CloseSent() {
		t.Fatal("CloseSent with none of the close frame taken")
	}
	errc := make(chan error, 1)
	go func() { errc <- c.WriteClose(1001, "") }()
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, errc); err != nil || !bytes.Equal(got, []byte{0x88, 0x02, 0x03, 0xe9}) {
		t.Fatalf("WriteClose after a close frame not taken: %v, the peer got %x", err, got)
	}
	if !c.CloseSent() {
		t.Fatal("CloseSent is false after WriteClose")
	}
}
