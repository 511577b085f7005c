package hijack_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/hijack"
)

// BenchmarkWriteFrames writes runs of frames to a TCP peer that reads as
// fast as it can: the cost of a write that the socket takes at once.
func BenchmarkWriteFrames(b *testing.B) {
	for _, bc := range []struct {
		name      string
		msgs, len int
	}{
		{"1x100B", 1, 100},
		{"64x1KiB", 64, 1 << 10},
		{"1x64KiB", 1, 64 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, peer := benchPair(b)
			go io.Copy(io.Discard, peer)
			c := hijack.NewConn(s, 10*time.Second)
			hdr, payload := hijack.AppendHeader(nil, false, bc.len), make([]byte, bc.len)
			vec := make(net.Buffers, 2*bc.msgs)
			b.SetBytes(int64(bc.msgs * bc.len))
			b.ReportAllocs()
			for b.Loop() {
				for i := 0; i < len(vec); i += 2 {
					vec[i], vec[i+1] = hdr, payload
				}
				bufs := vec
				if err := c.WriteFrames(&bufs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchPair(b *testing.B) (server, client net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s := <-accepted
	b.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// BenchmarkFrameParser follows small client messages in 512-byte reads, as
// the library reads: the parser's cost per byte handed out.
func BenchmarkFrameParser(b *testing.B) {
	var stream []byte
	for len(stream) < 64<<10 {
		stream = append(stream, clientFrame(0x82, make([]byte, 100))...)
	}
	var chunks [][]byte
	for rest := stream; len(rest) > 0; rest = rest[min(len(rest), 512):] {
		chunks = append(chunks, rest[:min(len(rest), 512)])
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		hijack.ScanClientFrames(chunks...)
	}
}
