package hijack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// decodeFrames parses server frames (unmasked) and returns each one's first
// byte and payload.
func decodeFrames(t *testing.T, b []byte) (heads []byte, payloads [][]byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("truncated header")
		}
		h0, l := b[0], int(b[1]&0x7f)
		if b[1]&0x80 != 0 {
			t.Fatalf("server frame is masked")
		}
		b = b[2:]
		switch l {
		case 126:
			l, b = int(binary.BigEndian.Uint16(b)), b[2:]
		case 127:
			l, b = int(binary.BigEndian.Uint64(b)), b[8:]
		}
		if len(b) < l {
			t.Fatalf("truncated payload")
		}
		heads, payloads = append(heads, h0), append(payloads, b[:l])
		b = b[l:]
	}
	return heads, payloads
}

func TestAppendHeaderLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 20} {
		for _, text := range []bool{false, true} {
			payload := bytes.Repeat([]byte{'x'}, n)
			frame := append(AppendHeader(nil, text, n), payload...)
			heads, payloads := decodeFrames(t, frame)
			want := byte(0x82)
			if text {
				want = 0x81
			}
			if len(heads) != 1 || heads[0] != want || len(payloads[0]) != n {
				t.Fatalf("n=%d text=%v: decoded %x, %d bytes", n, text, heads, len(payloads[0]))
			}
		}
	}
}

// AppendFrameHeader writes each data opcode, with and without FIN, at every
// length encoding; AppendHeader is its FIN case.
func TestAppendFrameHeader(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		for _, op := range []Opcode{OpContinuation, OpText, OpBinary} {
			for _, fin := range []bool{false, true} {
				frame := append(AppendFrameHeader(nil, op, fin, n), make([]byte, n)...)
				heads, payloads := decodeFrames(t, frame)
				want := byte(op)
				if fin {
					want |= 0x80
				}
				if len(heads) != 1 || heads[0] != want || len(payloads[0]) != n {
					t.Fatalf("op=%d fin=%v n=%d: decoded %x, %d bytes", op, fin, n, heads, len(payloads[0]))
				}
			}
		}
		if !bytes.Equal(AppendHeader(nil, true, n), AppendFrameHeader(nil, OpText, true, n)) ||
			!bytes.Equal(AppendHeader(nil, false, n), AppendFrameHeader(nil, OpBinary, true, n)) {
			t.Fatalf("n=%d: AppendHeader differs from AppendFrameHeader with FIN", n)
		}
	}
}

// The scanner must follow frames however the writes split them, notice a
// close frame's first and last bytes, and take nothing past the last.
func TestFrameScannerAnySplit(t *testing.T) {
	var stream []byte
	stream = append(AppendHeader(stream, false, 300), make([]byte, 300)...)
	stream = append(AppendHeader(stream, true, 70000), make([]byte, 70000)...)
	stream = append(stream, 0x89, 0x01, 'p') // ping
	stream = append(AppendHeader(stream, false, 0), []byte{}...)
	for split := 1; split < 40; split++ {
		var f frameScanner
		for off := 0; off < len(stream); off += split {
			p := stream[off:min(off+split, len(stream))]
			if n := f.scan(p); n != len(p) {
				t.Fatalf("split %d: took %d of %d bytes with no close frame", split, n, len(p))
			}
		}
		if !f.atBoundary() || f.closeStarted || f.closeWhole {
			t.Fatalf("split %d: atBoundary %v closeStarted %v closeWhole %v", split, f.atBoundary(), f.closeStarted, f.closeWhole)
		}
	}
	var f frameScanner
	f.scan(stream[:5])
	if f.atBoundary() {
		t.Fatal("atBoundary inside a frame")
	}
	f.scan(stream[5:])

	for _, closeFrame := range [][]byte{{0x88, 0x00}, {0x88, 0x02, 0x03, 0xe8}} {
		tail := append(closeFrame, 0x89, 0x00) // a ping after the close frame
		for cut := 0; cut < len(closeFrame); cut++ {
			g := f
			n := g.scan(tail[:cut])
			if n != cut || g.closeStarted != (cut > 0) || g.closeWhole {
				t.Fatalf("close frame %x cut at %d: took %d, closeStarted %v closeWhole %v",
					closeFrame, cut, n, g.closeStarted, g.closeWhole)
			}
			if n := g.scan(tail[cut:]); n != len(closeFrame)-cut || !g.closeWhole || !g.atBoundary() {
				t.Fatalf("close frame %x cut at %d: the rest took %d, closeWhole %v", closeFrame, cut, n, g.closeWhole)
			}
		}
	}
}

func TestWriteFrames(t *testing.T) {
	c, peer := framesPipe(t)
	var hdr []byte
	hdr = AppendHeader(hdr, true, 5)
	bufs := net.Buffers{hdr, []byte("hello"), AppendHeader(nil, false, 3), []byte{1, 2, 3}}
	if err := c.WriteFrames(&bufs); err != nil {
		t.Fatal(err)
	}
	// The library's own frame, then ours again.
	if _, err := c.Write([]byte{0x89, 0x00}); err != nil {
		t.Fatal(err)
	}
	bufs = net.Buffers{AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); err != nil {
		t.Fatal(err)
	}
	got := framesRead(t, peer, 200*time.Millisecond)
	heads, payloads := decodeFrames(t, got)
	if !bytes.Equal(heads, []byte{0x81, 0x82, 0x89, 0x82}) || string(payloads[0]) != "hello" ||
		!bytes.Equal(payloads[1], []byte{1, 2, 3}) || !bytes.Equal(payloads[3], []byte{9}) {
		t.Fatalf("got frames %x %q", heads, payloads)
	}
}

func TestWriteFramesRefusesAfterCloseAndMidFrame(t *testing.T) {
	c, _ := framesPipe(t)
	// Half of a library frame: 10 bytes announced, 4 written.
	if _, err := c.Write([]byte{0x02, 10, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	bufs := net.Buffers{AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); !errors.Is(err, ErrMidFrame) {
		t.Fatalf("WriteFrames inside a library frame: %v, want ErrMidFrame", err)
	}
	if _, err := c.Write([]byte{5, 6, 7, 8, 9, 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0x88, 0x02, 0x03, 0xe8}); err != nil { // close 1000
		t.Fatal(err)
	}
	bufs = net.Buffers{AppendHeader(nil, false, 1), []byte{9}}
	if err := c.WriteFrames(&bufs); !errors.Is(err, ErrCloseSent) {
		t.Fatalf("WriteFrames after a close frame: %v, want ErrCloseSent", err)
	}
}

func TestWriteFramesAbort(t *testing.T) {
	c, _ := framesPipe(t)
	big := make([]byte, 64<<20) // more than the socket buffers: the write blocks
	errc := make(chan error, 1)
	go func() {
		bufs := net.Buffers{AppendHeader(nil, false, len(big)), big}
		errc <- c.WriteFrames(&bufs)
	}()
	time.Sleep(100 * time.Millisecond)
	c.AbortWrites()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrWritesAborted) {
			t.Fatalf("aborted WriteFrames: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WriteFrames not aborted")
	}
}

// framesPipe returns a Conn over one end of a loopback TCP connection and the
// other end.
func framesPipe(t *testing.T) (*Conn, net.Conn) {
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

// framesRead reads what arrives within d.
func framesRead(t *testing.T, c net.Conn, d time.Duration) []byte {
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

var _ io.Writer = (*Conn)(nil)
