package hijack_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// tcpPair returns both ends of a loopback TCP connection: server, to wrap
// in a *hijack.Conn, and client, which the test drives as the peer (its
// reads and writes fail after 10 s).
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
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
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	// A broken Conn must fail the test, not hang it.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// serve starts an HTTP server whose one handler accepts a WebSocket through
// hijack.NewResponseWriter (write timeout 5 s) and runs h on it; it returns
// the ws:// URL and a channel that receives h's error when it returns.
// The server and the connection are closed when the test ends.
func serve(t *testing.T, h func(c *websocket.Conn, nc *hijack.Conn) error) (string, <-chan error) {
	t.Helper()
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := hijack.NewResponseWriter(w, 5*time.Second)
		c, err := websocket.Accept(hw, r, nil)
		if err != nil {
			done <- err
			return
		}
		defer c.CloseNow()
		done <- h(c, hw.Conn())
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), done
}

// wait returns what ch delivers, failing the test if nothing comes within
// 10 s.
func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
		var zero T
		return zero
	}
}

// rawClient is a WebSocket client that writes and reads frames by hand over
// a plain TCP connection, to send what a library would not and to see every
// byte the server sends.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialRaw connects to url (ws://host/path) and completes the handshake.
func dialRaw(t *testing.T, url string) *rawClient {
	t.Helper()
	return dialRawWith(t, url, nil)
}

// dialRawWith is dialRaw sending early, frames, in the same write as the
// request, before the server has answered it.
func dialRawWith(t *testing.T, url string, early []byte) *rawClient {
	t.Helper()
	host := strings.TrimPrefix(url, "ws://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
	if _, err := nc.Write(append(req, early...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return &rawClient{t: t, nc: nc, br: br}
}

// clientFrame returns a masked client frame with a random key.
func clientFrame(b0 byte, payload []byte) []byte {
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = append(f, b0, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, b0, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i&3])
	}
	return f
}

// closePayload is a close frame's payload: the code, then the reason.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw client write: %v", err)
	}
}

type serverFrame struct {
	b0      byte // FIN, RSV and opcode
	payload []byte
}

// readFrame reads the next server frame, or returns io.EOF once the server
// has closed the connection.
func (c *rawClient) readFrame() (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return serverFrame{}, fmt.Errorf("masked server frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126, 127:
		ext := make([]byte, 2+6*(n-126))
		if _, err := io.ReadFull(c.br, ext); err != nil {
			return serverFrame{}, err
		}
		n = 0
		for _, b := range ext {
			n = n<<8 | uint64(b)
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{h[0], p}, nil
}

// readAll reads frames until the server closes the connection.
func (c *rawClient) readAll() []serverFrame {
	c.t.Helper()
	var fs []serverFrame
	for {
		f, err := c.readFrame()
		if err == io.EOF {
			return fs
		}
		if err != nil {
			c.t.Fatalf("raw client read after %d frames: %v", len(fs), err)
		}
		fs = append(fs, f)
	}
}

// dial opens a real WebSocket client connection to url.
func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}
