package forward

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFanOut measures the server's cost of one inbound message fanned
// out to N receivers: a real Server behind httptest, with clients that are raw
// sockets allocating nothing per message (the sender writes pre-masked frames,
// receivers count bytes into a fixed buffer). Every allocation counted is
// therefore the server's (or the runtime's on its behalf).
//
// allocs/msg is allocations per inbound message; allocs/delivery divides it by
// the receivers. ns/op is per inbound message, and so is cpu-ns/msg, the
// process's CPU time (server and the cheap clients), which unlike ns/op
// hardly depends on what else the machine runs.
func BenchmarkFanOut(b *testing.B) {
	for _, size := range []int{64, 1024} {
		for _, receivers := range []int{1, 10} {
			b.Run(fmt.Sprintf("size=%d/receivers=%d", size, receivers), func(b *testing.B) {
				benchFanOut(b, size, receivers)
			})
		}
	}
}

func benchFanOut(b *testing.B, size, receivers int) {
	ts := startServer(b)
	addr := strings.TrimPrefix(ts.http.URL, "http://")
	var recv []net.Conn
	for i := range receivers {
		c := benchDial(b, addr, fmt.Sprintf("r%d", i), "bench")
		recv = append(recv, c)
	}
	sender := benchDial(b, addr, "s", "bench")
	for i := range receivers {
		waitMember(b, ts, "bench", fmt.Sprintf("r%d", i))
	}
	waitMember(b, ts, "bench", "s")

	// Server-to-client frames are unmasked: a 2-byte header below 126 bytes
	// of payload, 4 bytes up to 64 KiB.
	outFrame := int64(size + 2)
	if size >= 126 {
		outFrame = int64(size + 4)
	}
	frame := maskedFrame(size)
	const perWrite = 32
	batch := bytes.Repeat(frame, perWrite)

	done := make(chan error, receivers)
	start := make(chan int64)
	for _, c := range recv {
		go func() {
			want := <-start * outFrame
			buf := make([]byte, 64<<10)
			var got int64
			for got < want {
				n, err := c.Read(buf)
				got += int64(n)
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}

	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cpu0 := processCPU()
	b.ResetTimer()
	for range receivers {
		start <- int64(b.N)
	}
	for sent := 0; sent < b.N; {
		n := min(perWrite, b.N-sent)
		if _, err := sender.Write(batch[:n*len(frame)]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	for range receivers {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&after)
	// CPU time, unlike ns/op, hardly depends on what else the machine runs.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	allocs := float64(after.Mallocs-before.Mallocs) / float64(b.N)
	b.ReportMetric(allocs, "allocs/msg")
	b.ReportMetric(allocs/float64(receivers), "allocs/delivery")
	b.SetBytes(int64(size))
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDial opens a raw WebSocket client connection and consumes the 101
// response. The connection is closed when the benchmark ends.
func benchDial(b *testing.B, addr, id, group string) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	req := "GET " + "/?id=" + id + "&groupName=" + group + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	// Read the response byte by byte so that nothing after it is buffered
	// away from the raw reads that follow.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReaderSize(&oneByteReader{c}, 16)
	status, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		b.Fatalf("handshake: %q %v", status, err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(1, len(p))]) }

// maskedFrame is one final binary client frame of size payload bytes.
func maskedFrame(size int) []byte {
	f := []byte{0x82}
	if size < 126 {
		f = append(f, 0x80|byte(size))
	} else {
		f = append(f, 0x80|126, byte(size>>8), byte(size))
	}
	key := [4]byte{1, 2, 3, 4}
	f = append(f, key[:]...)
	for i := range size {
		f = append(f, byte(i)^key[i&3])
	}
	return f
}
