package hijack

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// Reads through a small buffer get every byte, in order, whether they come
// from the socket or from what was read ahead; EOF (and ReadFailed) only
// once they are all used up.
func TestReadAheadKeepsOrderAndEOF(t *testing.T) {
	c, peer := framesPipe(t)
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 31)
	}
	go func() {
		_, _ = peer.Write(want)
		peer.Close()
	}()
	time.Sleep(50 * time.Millisecond) // let it all arrive: reads then fill the small buffer
	var got []byte
	p := make([]byte, 512)
	for {
		n, err := c.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.ReadFailed() {
			t.Fatalf("ReadFailed after %d of %d bytes", len(got), len(want))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, differing from the %d written", len(got), len(want))
	}
	if !c.ReadFailed() {
		t.Fatal("ReadFailed not set at EOF")
	}
	if c.ahead != nil {
		t.Fatal("a read-ahead buffer is still held after EOF")
	}
}

// An idle reader holds no read-ahead buffer.
func TestReadAheadNotHeldWhileIdle(t *testing.T) {
	c, peer := framesPipe(t)
	if _, err := peer.Write(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	p := make([]byte, 512)
	if _, err := io.ReadFull(c, p); err != nil {
		t.Fatal(err)
	}
	if c.ahead != nil {
		t.Fatal("read-ahead buffer held with nothing more to read")
	}
}
