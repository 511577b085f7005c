package forward

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// rawClient speaks RFC 6455 frames directly, so tests can send exactly the
// frames they mean (split runes, empty fragments, a message cut off by a
// drop) and have them on the wire at once.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

func dialRaw(t testing.TB, ts *testServer, id, group string) *rawClient {
	t.Helper()
	u, err := url.Parse(ts.http.URL)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /ws?id=" + url.QueryEscape(id) + "&groupName=" + url.QueryEscape(group) + " HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw dial: status %d", resp.StatusCode)
	}
	waitMember(t, ts, group, id)
	return &rawClient{t: t, nc: nc, br: br}
}

// frame writes one masked frame.
func (c *rawClient) frame(fin bool, op byte, payload []byte) {
	c.t.Helper()
	b := c.encode(fin, op, payload)
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

func (c *rawClient) encode(fin bool, op byte, payload []byte) []byte {
	h := op
	if fin {
		h |= 0x80
	}
	b := []byte{h}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i%4])
	}
	return b
}

// readFrame reads one frame from the server (unmasked).
func (c *rawClient) readFrame(d time.Duration) (fin bool, op byte, payload []byte, err error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var h [2]byte
	if _, err = io.ReadFull(c.br, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var ext [2]byte
		if _, err = io.ReadFull(c.br, ext[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err = io.ReadFull(c.br, ext[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return
}

// expectClose reads frames until a close frame and checks its code. Data
// frames before it are returned.
func (c *rawClient) expectClose(code int, d time.Duration) (data []byte) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, op, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for close %d: %v", code, err)
		}
		switch op {
		case opClose:
			got := 0
			if len(p) >= 2 {
				got = int(binary.BigEndian.Uint16(p))
			}
			if got != code {
				c.t.Fatalf("close code %d (%q), want %d", got, p[min(2, len(p)):], code)
			}
			return data
		case opPing:
			c.frame(true, opPong, p)
		default:
			data = append(data, p...)
		}
	}
}

func (c *rawClient) String() string { return fmt.Sprintf("raw %s", c.nc.LocalAddr()) }

// drop closes the TCP connection without a close frame.
func (c *rawClient) drop() { _ = c.nc.Close() }
