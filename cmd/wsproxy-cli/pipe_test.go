package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// pipeOnce sends in through one pipe and returns what another received
// (--count 1).
// Each call uses a group of its own: a member of the last call may still be
// closing.
func pipeOnce(t *testing.T, p *proxytest.Proxy, group string, in []byte, sendFlags, recvFlags []string) []byte {
	t.Helper()
	group = fmt.Sprintf("%s-%d", group, len(in))
	var got bytes.Buffer
	rx := start(t, p, nil, &got, append([]string{"pipe", "--group", group, "--id", "rx", "--receive-only", "--count", "1"}, recvFlags...)...)
	p.WaitMember(t, group, "rx")
	tx := start(t, p, bytes.NewReader(in), nil, append([]string{"pipe", "--group", group, "--id", "tx", "--exit-on-eof"}, sendFlags...)...)
	if code := tx.wait(t); code != 0 {
		t.Fatalf("sender exit %d: %s", code, tx.stderr.String())
	}
	if code := rx.wait(t); code != 0 {
		t.Fatalf("receiver exit %d: %s", code, rx.stderr.String())
	}
	return got.Bytes()
}

// pipe is byte-exact for the sizes websocat got wrong, binary with NULs and
// invalid UTF-8 included (the old CLI sent binary as text: closed 1007).
func TestPipeByteExact(t *testing.T) {
	p := proxytest.Start(t)
	for _, size := range []int{0, 1, 64<<10 - 1, 64<<10 + 1, 3 << 20} {
		in := make([]byte, size)
		_, _ = rand.Read(in)
		if size > 2 {
			in[0], in[1], in[2] = 0, 0xff, 0xfe // a NUL and bytes that are never UTF-8
		}
		got := pipeOnce(t, p, "exact", in, nil, nil)
		if !bytes.Equal(got, in) {
			t.Fatalf("size %d: got %d bytes, different", size, len(got))
		}
	}
}

// 100 MiB through pipe, byte-exact, without the test holding it either.
func TestPipe100MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	p := proxytest.Start(t)
	const size = 100 << 20
	sum := sha256.New()
	rx := start(t, p, nil, sum, "pipe", "--group", "big", "--id", "rx", "--receive-only", "--count", "1")
	p.WaitMember(t, "big", "rx")
	want := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.Reader, size), want)
	tx := start(t, p, src, nil, "pipe", "--group", "big", "--id", "tx", "--exit-on-eof")
	if code := tx.wait(t); code != 0 {
		t.Fatalf("sender: %d %s", code, tx.stderr.String())
	}
	if code := rx.wait(t); code != 0 {
		t.Fatalf("receiver: %d %s", code, rx.stderr.String())
	}
	if !bytes.Equal(sum.Sum(nil), want.Sum(nil)) {
		t.Fatal("100 MiB differ")
	}
}

// --lines: a line over 1 MiB is one message, whole (the old CLI dropped
// lines over 64 KiB and exited 0).
func TestPipeLongLine(t *testing.T) {
	p := proxytest.Start(t)
	long := strings.Repeat("é", 700_000) // 1.4 MB of two-byte runes, split anywhere by buffers
	in := long + "\nshort\n"
	var got bytes.Buffer
	rx := start(t, p, nil, &got, "pipe", "--group", "lines", "--id", "rx", "--receive-only", "--lines", "--count", "2")
	p.WaitMember(t, "lines", "rx")
	tx := start(t, p, strings.NewReader(in), nil, "pipe", "--group", "lines", "--id", "tx", "--lines", "--exit-on-eof")
	if code := tx.wait(t); code != 0 {
		t.Fatalf("sender: %d %s", code, tx.stderr.String())
	}
	if code := rx.wait(t); code != 0 {
		t.Fatalf("receiver: %d %s", code, rx.stderr.String())
	}
	if got.String() != in {
		t.Fatalf("got %d bytes, want %d", got.Len(), len(in))
	}
}

// --text refuses input that is not UTF-8, saying what to do, with a
// non-zero exit; the receiver gets no message.
func TestPipeTextRefusesBinary(t *testing.T) {
	p := proxytest.Start(t)
	rx := dialRaw(t, p, "rx", "utf")
	tx := start(t, p, bytes.NewReader([]byte{'a', 0xff, 'b'}), nil, "pipe", "--group", "utf", "--id", "tx", "--text", "--exit-on-eof")
	if code := tx.wait(t); code != exitError || !strings.Contains(tx.stderr.String(), "--binary") {
		t.Fatalf("exit %d: %s", code, tx.stderr.String())
	}
	p.WaitGone(t, "utf", "tx")
	// A marker from another member arrives first: nothing of tx's came.
	other := dialRaw(t, p, "other", "utf")
	_ = other.Send(ctxBG(t), 1, []byte("marker"))
	m, err := rx.Next(ctxBG(t))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := m.Bytes(100); string(b) != "marker" {
		t.Fatalf("receiver got %q", b)
	}
}

// The end of stdin does not end receiving (the old CLI exited).
func TestPipeKeepsReceivingAfterStdinEnds(t *testing.T) {
	p := proxytest.Start(t)
	peer := dialRaw(t, p, "peer", "eof")
	var got syncBuffer
	pp := start(t, p, strings.NewReader("hello"), &got, "pipe", "--group", "eof", "--id", "pp", "--count", "1")
	m, err := peer.Next(ctxBG(t)) // its stdin was sent...
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := m.Bytes(100); string(b) != "hello" {
		t.Fatalf("peer got %q", b)
	}
	if !p.IsMember("eof", "pp") {
		t.Fatal("pipe left when its stdin ended")
	}
	if err := peer.Send(ctxBG(t), 2, []byte("answer\x00")); err != nil { // ...and it still receives
		t.Fatal(err)
	}
	if code := pp.wait(t); code != 0 || got.String() != "answer\x00" {
		t.Fatalf("exit %d, got %q", code, got.String())
	}
}
