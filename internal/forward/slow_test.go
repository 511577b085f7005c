package forward

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSlowConsumer freezes one receiver (it never reads) under each policy and
// pushes far more than the loopback socket buffers and its queue hold: the
// frozen receiver is closed with 1008 in bounded time, and every other
// receiver gets every message in order (Tailscale's TestSendFreeze, for us).
//
// Under disconnect, senders never wait, so a sender faster than the healthy
// readers would (rightly) get them evicted too; the sender is paced, as a
// chat or telemetry sender is.
func TestSlowConsumer(t *testing.T) {
	for _, policy := range []Policy{Backpressure, Disconnect} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, func(o *Options) {
				o.SlowConsumer = policy
				o.SendQueueBytes = 1 << 20
				o.WriteTimeout = 2 * time.Second
			})
			sender := dial(t, ts, "sender", "g")
			frozen := dial(t, ts, "frozen", "g") // never read until the end
			frozenSess := ts.registry.Member("g", "frozen")
			var readers []*websocket.Conn
			for i := range 3 {
				readers = append(readers, dial(t, ts, fmt.Sprintf("r%d", i), "g"))
			}

			const count, size = 2000, 8 << 10 // 16 MiB: well past socket buffers + queue
			errs := make(chan error, len(readers)+1)
			var wg sync.WaitGroup
			for i, r := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					for want := range count {
						_, b, err := r.Read(ctx)
						if err != nil {
							errs <- fmt.Errorf("r%d: after %d messages: %v", i, want, err)
							return
						}
						if got := binary.BigEndian.Uint32(b); got != uint32(want) || len(b) != size {
							errs <- fmt.Errorf("r%d: got seq %d (%d bytes), want %d", i, got, len(b), want)
							return
						}
					}
				}()
			}
			start := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := make([]byte, size)
				for i := range count {
					binary.BigEndian.PutUint32(b, uint32(i))
					if policy == Disconnect && i%2 == 0 {
						// At most 3.3 MB/s: a healthy reader starved of CPU
						// on a busy machine has 300 ms to catch up before
						// its 1 MiB queue is full (at 16 MB/s, 65 ms was
						// not always enough under load).
						time.Sleep(5 * time.Millisecond)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err := sender.Write(ctx, websocket.MessageBinary, b)
					cancel()
					if err != nil {
						errs <- fmt.Errorf("sender: %v", err)
						return
					}
				}
			}()

			select {
			case <-frozenSess.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("frozen receiver was never closed")
			}
			evictedAfter := time.Since(start)
			code, reason, byPeer := frozenSess.CloseStatus()
			if code != websocket.StatusPolicyViolation || reason != "slow consumer" || byPeer {
				t.Fatalf("frozen receiver closed with %d %q (by peer: %v), want 1008 slow consumer", code, reason, byPeer)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%s: frozen receiver evicted after %v", policy, evictedAfter.Round(time.Millisecond))

			// The frozen client, reading at last, finds its connection ended
			// (with 1008 if the close frame fit, else a drop) in bounded time.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for n := 0; ; n++ {
				if _, _, err := frozen.Read(ctx); err != nil {
					t.Logf("frozen read %d messages then %v", n, err)
					if ctx.Err() != nil {
						t.Fatal("frozen client's connection never ended")
					}
					if s := websocket.CloseStatus(err); s != -1 && s != websocket.StatusPolicyViolation {
						t.Fatalf("frozen client saw close %d", s)
					}
					break
				}
			}
		})
	}
}

// TestBackpressureWaitsForSlowReceiver: under backpressure a receiver that is
// slow but keeps reading is never evicted, and the sender just waits.
func TestBackpressureWaitsForSlowReceiver(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(o *Options) {
		o.SendQueueBytes = 64 << 10
		o.WriteTimeout = time.Second
	})
	sender := dial(t, ts, "sender", "g")
	slow := dial(t, ts, "slow", "g")
	const count = 300
	go func() {
		b := make([]byte, 32<<10)
		for i := range count {
			binary.BigEndian.PutUint32(b, uint32(i))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = sender.Write(ctx, websocket.MessageBinary, b)
			cancel()
		}
	}()
	for i := range count {
		_, b := readMsg(t, slow, 10*time.Second)
		if got := binary.BigEndian.Uint32(b); got != uint32(i) {
			t.Fatalf("got %d, want %d", got, i)
		}
		if i%50 == 0 {
			time.Sleep(100 * time.Millisecond) // slow, but well within the write timeout
		}
	}
	if code, _, _ := ts.registry.Member("g", "slow").CloseStatus(); code != 0 {
		t.Fatalf("slow receiver was closed with %d", code)
	}
}
