package hijack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// recordingConn keeps a copy of everything written to it.
type recordingConn struct {
	net.Conn
	mu      sync.Mutex
	written []byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written = append(c.written, p...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// frames returns what was written after the HTTP request: the client's
// WebSocket frames.
func (c *recordingConn) frames(t *testing.T) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := bytes.Index(c.written, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no HTTP request recorded")
	}
	return bytes.Clone(c.written[i+4:])
}

// clientTraffic has a real client send, over a real loopback connection to
// a server reading through a *hijack.Conn, messages of every length
// encoding, a message in fragments (an empty one among them), a ping, and
// a close frame. It returns the frames the client wrote, the payload bytes
// it sent, and the server's PayloadIn once it has read everything.
func clientTraffic(t *testing.T) (frames []byte, sent, payloadIn int64) {
	t.Helper()
	type result struct {
		read, payloadIn int64
		err             error
	}
	results := make(chan result, 1)
	url, done := serve(t, func(c *websocket.Conn, nc *hijack.Conn) error {
		c.SetReadLimit(-1)
		var res result
		for {
			_, r, err := c.Reader(context.Background())
			if err != nil {
				if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
					res.err = err
				}
				break
			}
			n, err := io.Copy(io.Discard, r)
			res.read += n
			if err != nil {
				res.err = err
				break
			}
		}
		res.payloadIn = nc.PayloadIn()
		results <- res
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rec *recordingConn
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			rec = &recordingConn{Conn: c}
			return rec, nil
		},
	}}
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.CloseRead(ctx) // answers the server's pong, and Close's close frame

	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 200000} {
		typ := websocket.MessageBinary
		if n%2 == 1 {
			typ = websocket.MessageText
		}
		if err := c.Write(ctx, typ, bytes.Repeat([]byte("x"), n)); err != nil {
			t.Fatal(err)
		}
		sent += int64(n)
	}
	w, err := c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 0, 70000, 3} {
		if _, err := w.Write(bytes.Repeat([]byte("y"), n)); err != nil {
			t.Fatal(err)
		}
		sent += int64(n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done ✓"); err != nil {
		t.Fatal(err)
	}
	res := wait(t, results)
	if err := wait(t, done); err != nil || res.err != nil {
		t.Fatalf("server: %v, %v", err, res.err)
	}
	if res.read != sent {
		t.Fatalf("the server read %d payload bytes of the %d sent", res.read, sent)
	}
	return rec.frames(t), sent, res.payloadIn
}

// TestPayloadInRealClient: PayloadIn counts exactly the payload a real
// client sent, through the library's reads; and the parser, run over the
// same frames cut at random places, counts the same and lets everything
// through.
func TestPayloadInRealClient(t *testing.T) {
	t.Parallel()
	frames, sent, payloadIn := clientTraffic(t)
	if payloadIn != sent {
		t.Fatalf("PayloadIn is %d after %d payload bytes", payloadIn, sent)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 90 {
		var chunks [][]byte
		for rest := frames; len(rest) > 0; {
			max := 70000
			if round%3 == 0 {
				max = 20 // small pieces: headers cut everywhere
			}
			k := min(len(rest), 1+rng.IntN(max))
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		n, payload, refused, boundary := hijack.ScanClientFrames(chunks...)
		if n != len(frames) || payload != sent || refused || !boundary {
			t.Fatalf("round %d: let %d of %d bytes through, payload %d of %d, refused %v, at a boundary %v",
				round, n, len(frames), payload, sent, refused, boundary)
		}
	}
}

// TestFrameParserCloseFrames: a close frame whose reason is not UTF-8 is let
// through up to its last byte, however the bytes are cut; any other close
// frame goes through whole.
func TestFrameParserCloseFrames(t *testing.T) {
	t.Parallel()
	data := clientFrame(0x82, []byte("abc"))
	for _, tc := range []struct {
		name    string
		payload []byte
		refused bool
	}{
		{"empty", nil, false},
		{"code only", closePayload(1000, ""), false},
		{"utf-8 reason", closePayload(1000, "bye ✓"), false},
		{"one byte", []byte{0x03}, false}, // the library refuses it itself
		{"longest reason", closePayload(1000, strings.Repeat("é", 61)+"x"), false},
		{"bad reason", closePayload(1000, "\xff\xfe"), true},
		{"reason cut in a rune", closePayload(1001, strings.Repeat("x", 120)+"\xe2\x82"), true},
	} {
		stream := append(append(append([]byte{}, data...), clientFrame(0x88, tc.payload)...), data...)
		closeEnd := len(data) + len(clientFrame(0x88, tc.payload))
		for cut := 0; cut <= len(stream); cut++ {
			n, payload, refused, _ := hijack.ScanClientFrames(stream[:cut], stream[cut:])
			want, wantPayload := len(stream), int64(6)
			if tc.refused {
				want, wantPayload = closeEnd-1, 3
			}
			if refused != tc.refused || n != want || payload != wantPayload {
				t.Fatalf("%s, cut at %d: let %d bytes through (payload %d), refused %v; want %d (%d), %v",
					tc.name, cut, n, payload, refused, want, wantPayload, tc.refused)
			}
		}
	}
}

// TestInvalidCloseNeverEchoed: a client's close frame whose reason is not
// UTF-8 never reaches the library whole: the server's Reader fails with
// ErrInvalidClose (ReadFailed stays false) and the client gets back the
// server's own close frame, not its reason echoed. Whether the frame comes
// after the handshake or in the same packet as the request.
func TestInvalidCloseNeverEchoed(t *testing.T) {
	t.Parallel()
	for _, early := range []bool{false, true} {
		name := "after-handshake"
		if early {
			name = "with-request"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			type result struct {
				err        error
				readFailed bool
			}
			results := make(chan result, 1)
			url, done := serve(t, func(c *websocket.Conn, nc *hijack.Conn) error {
				_, _, err := c.Reader(context.Background())
				results <- result{err, nc.ReadFailed()}
				if errors.Is(err, hijack.ErrInvalidClose) {
					_ = c.Close(websocket.StatusInvalidFramePayloadData, "invalid utf-8")
				}
				return nil
			})
			bad := clientFrame(0x88, closePayload(1000, "\xff\xfe"))
			var rc *rawClient
			if early {
				rc = dialRawWith(t, url, bad)
			} else {
				rc = dialRaw(t, url)
				rc.write(bad)
			}
			res := wait(t, results)
			if !errors.Is(res.err, hijack.ErrInvalidClose) {
				t.Fatalf("the server's Reader: %v, want ErrInvalidClose", res.err)
			}
			if res.readFailed {
				t.Error("ReadFailed after an invalid close frame")
			}
			got := rc.readAll()
			want := append([]byte{0x03, 0xef}, "invalid utf-8"...)
			if len(got) != 1 || got[0].b0 != 0x88 || !bytes.Equal(got[0].payload, want) {
				t.Fatalf("the client got %d frames, the first %+v; want only the server's close 1007", len(got), got)
			}
			if err := wait(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOtherCloseFramesReachTheLibrary: a valid close frame reaches the
// library, which echoes it; one of 1 byte too, which it refuses with 1002.
func TestOtherCloseFramesReachTheLibrary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		payload []byte
		code    uint16 // of the server's answer
	}{
		{"valid", closePayload(1000, "bye ✓"), 1000},
		{"one byte", []byte{0x03}, 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			errc := make(chan error, 1)
			url, _ := serve(t, func(c *websocket.Conn, nc *hijack.Conn) error {
				_, _, err := c.Reader(context.Background())
				errc <- err
				return nil
			})
			rc := dialRaw(t, url)
			rc.write(clientFrame(0x88, tc.payload))
			if err := wait(t, errc); err == nil || errors.Is(err, hijack.ErrInvalidClose) {
				t.Fatalf("the server's Reader: %v", err)
			}
			got := rc.readAll()
			if len(got) != 1 || got[0].b0 != 0x88 || len(got[0].payload) < 2 ||
				uint16(got[0].payload[0])<<8|uint16(got[0].payload[1]) != tc.code {
				t.Fatalf("the client got %+v, want one close frame with code %d", got, tc.code)
			}
			if tc.code == 1000 && !bytes.Equal(got[0].payload, tc.payload) {
				t.Fatalf("the echo is %q, want %q", got[0].payload, tc.payload)
			}
		})
	}
}

// FuzzFrameParser: the parser lets through, counts and refuses the same
// whether it gets its bytes at once or cut in three, and never panics.
func FuzzFrameParser(f *testing.F) {
	var frames []byte
	for _, n := range []int{0, 5, 126} {
		frames = append(frames, clientFrame(0x02, make([]byte, n))...)
	}
	frames = append(frames, clientFrame(0x89, []byte("ping"))...)
	frames = append(frames, clientFrame(0x00, make([]byte, 0x10000))[:20]...) // 64-bit length, cut short
	f.Add(frames, uint32(3), uint32(20))
	f.Add(clientFrame(0x88, closePayload(1000, "\xff")), uint32(1), uint32(8))
	f.Add(append(clientFrame(0x01, []byte("hi")), clientFrame(0x88, closePayload(1000, "ok"))...), uint32(0), uint32(9))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint32) {
		i := int(a % uint32(len(data)+1))
		j := i + int(b%uint32(len(data)-i+1))
		n, payload, refused, boundary := hijack.ScanClientFrames(data)
		n3, payload3, refused3, boundary3 := hijack.ScanClientFrames(data[:i], data[i:j], data[j:])
		if n != n3 || payload != payload3 || refused != refused3 || boundary != boundary3 {
			t.Fatalf("at once: %d %d %v %v; cut at %d, %d: %d %d %v %v",
				n, payload, refused, boundary, i, j, n3, payload3, refused3, boundary3)
		}
		if n > len(data) || payload > int64(n) || refused && n == len(data) {
			t.Fatalf("let %d of %d bytes through, payload %d, refused %v", n, len(data), payload, refused)
		}
	})
}

// TestReadInvalidCloseSticks: Read hands out every byte before the last one
// of a close frame whose reason is not UTF-8, then returns ErrInvalidClose
// for good, without a socket failure; the data before it counts in
// PayloadIn, the close frame does not.
func TestReadInvalidCloseSticks(t *testing.T) {
	t.Parallel()
	c, peer := pipe(t, 0)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second)) // fail, not hang
	data := clientFrame(0x82, []byte("abcd"))
	bad := clientFrame(0x88, closePayload(1000, "\xff"))
	go peer.Write(append(append(append([]byte{}, data...), bad...), data...))
	var got []byte
	buf := make([]byte, 3)
	var err error
	for err == nil {
		var n int
		n, err = c.Read(buf)
		got = append(got, buf[:n]...)
	}
	if !errors.Is(err, hijack.ErrInvalidClose) {
		t.Fatalf("Read: %v, want ErrInvalidClose", err)
	}
	if want := len(data) + len(bad) - 1; len(got) != want {
		t.Fatalf("Read handed out %d bytes, want %d", len(got), want)
	}
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, hijack.ErrInvalidClose) {
		t.Fatalf("Read again: %d, %v; want 0, ErrInvalidClose", n, err)
	}
	if c.ReadFailed() {
		t.Error("ReadFailed after an invalid close frame")
	}
	if p := c.PayloadIn(); p != 4 {
		t.Errorf("PayloadIn = %d, want 4", p)
	}
}
