package forward

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Whole messages leave the session writer as frames it builds itself, many
// per system call, while the library writes pings from another goroutine.
// Every size of length encoding must arrive intact, in order, as one message
// of the right type.
func TestWriterFramesEverySizeAmidPings(t *testing.T) {
	ts := startServer(t, func(o *Options) {
		o.PingInterval = time.Millisecond
		o.PingTimeout = 5 * time.Second
	})
	a := dial(t, ts, "a", "g")
	b := dial(t, ts, "b", "g")
	// a only sends, but its library answers the pings only while something
	// reads: without this a is closed for not answering whenever the
	// transfer outlasts the ping timeout (a busy machine, -race).
	a.CloseRead(context.Background())
	sizes := []int{0, 1, 125, 126, 127, 1000, 1024, 1025, 0xffff, 0x10000, 300 << 10, 1 << 20}
	var want [][]byte
	for round := range 20 {
		for _, n := range sizes {
			p := bytes.Repeat([]byte{byte('a' + round%26)}, n)
			if n > 0 {
				copy(p, fmt.Sprintf("%d/%d", round, n))
			}
			want = append(want, p)
		}
	}
	errc := make(chan error, 1)
	go func() {
		for i, p := range want {
			typ := websocket.MessageBinary
			if i%2 == 0 {
				typ = websocket.MessageText
			}
			if err := a.Write(context.Background(), typ, p); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, p := range want {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		typ, got, err := b.Read(ctx)
		cancel()
		if err != nil {
			sender := "still sending"
			select {
			case err := <-errc:
				sender = fmt.Sprintf("done: %v", err)
			default:
			}
			t.Fatalf("b reading message %d of %d: %v (the sender is %s)", i, len(want), err, sender)
		}
		wantTyp := websocket.MessageBinary
		if i%2 == 0 {
			wantTyp = websocket.MessageText
		}
		if typ != wantTyp || !bytes.Equal(got, p) {
			t.Fatalf("message %d: got %v of %d bytes, want %v of %d", i, typ, len(got), wantTyp, len(p))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
