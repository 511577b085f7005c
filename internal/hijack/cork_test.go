package hijack

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// pipe returns a Conn over one end of a loopback TCP connection and the
// other end.
func pipe(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return NewConn(server, time.Second), client
}

// readAvailable reads what arrives within d.
func readAvailable(t *testing.T, c net.Conn, d time.Duration) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 1<<20)
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got
		}
	}
}

func TestCorkHoldsWritesUntilUncork(t *testing.T) {
	c, peer := pipe(t)
	c.Cork()
	for _, s := range []string{"one ", "two ", "three"} {
		if n, err := c.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("corked Write = %d, %v", n, err)
		}
	}
	if got := readAvailable(t, peer, 50*time.Millisecond); len(got) != 0 {
		t.Fatalf("peer got %q before Uncork", got)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if got := readAvailable(t, peer, 200*time.Millisecond); string(got) != "one two three" {
		t.Fatalf("peer got %q, want %q", got, "one two three")
	}
	// Uncorked, writes go straight out.
	if _, err := c.Write([]byte("four")); err != nil {
		t.Fatal(err)
	}
	if got := readAvailable(t, peer, 200*time.Millisecond); string(got) != "four" {
		t.Fatalf("peer got %q, want %q", got, "four")
	}
}

func TestCorkOverflowKeepsOrder(t *testing.T) {
	c, peer := pipe(t)
	var want []byte
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(3*corkBufSize+100)))
		done <- b
	}()
	c.Cork()
	// Small writes past the buffer, then one larger than half of it, then
	// small ones again: everything arrives once, in order.
	for i := 0; len(want) < corkBufSize+10; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1000)
		want = append(want, p...)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte{0xee}, corkBufSize)
	want = append(want, big...)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	for len(want) < 3*corkBufSize+100 {
		p := []byte{byte(len(want))}
		want = append(want, p...)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if !bytes.Equal(got, want) {
			t.Fatalf("peer got %d bytes, not the %d written in order", len(got), len(want))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("peer did not get everything")
	}
}

// A frame the library writes while the session writer has the Conn corked
// (a close frame, say) must still leave when the Conn is closed.
func TestCloseSendsWhatIsHeld(t *testing.T) {
	c, peer := pipe(t)
	c.Cork()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAvailable(t, peer, time.Second); string(got) != "held" {
		t.Fatalf("peer got %q, want %q", got, "held")
	}
}

// Close must not hang on a corked Conn whose peer reads nothing.
func TestCloseOfStuckCorkedConnIsBounded(t *testing.T) {
	c, _ := pipe(t)
	c.Cork()
	chunk := make([]byte, corkBufSize/4)
	writeErr := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the socket buffers are full by now
	start := time.Now()
	_ = c.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	select {
	case <-writeErr:
	case <-time.After(2 * time.Second):
		t.Fatal("the blocked write did not end after Close")
	}
}
