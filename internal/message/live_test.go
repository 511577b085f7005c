package message

import (
	"testing"

	"github.com/coder/websocket"
)

// Live counts a Buf until its last reference goes, and a ring until the
// stream is ended and every cursor detached, in whichever order.
func TestLive(t *testing.T) {
	bufs0, rings0 := Live()
	check := func(when string, bufs, rings int64) {
		t.Helper()
		if b, r := Live(); b-bufs0 != bufs || r-rings0 != rings {
			t.Fatalf("%s: %d bufs and %d rings live, want %d and %d", when, b-bufs0, r-rings0, bufs, rings)
		}
	}

	b := GetBuf(10)
	b = b.Grow(1000) // a new Buf; the old one goes back
	b.Retain(2)
	check("after GetBuf, Grow, Retain", 1, 0)
	b.ReleaseN(2)
	check("with one reference left", 1, 0)
	b.Release()
	check("after the last Release", 0, 0)

	pool := NewRingPool(64, nil)
	for _, finishFirst := range []bool{true, false} {
		st := NewStream(websocket.MessageBinary, pool)
		c1, c2 := st.Attach(), st.Attach()
		check("stream started", 0, 1)
		if finishFirst {
			st.Finish()
		}
		c1.Detach()
		c2.Detach()
		if !finishFirst {
			check("every cursor detached, not ended", 0, 1)
			st.Abort()
		}
		check("stream over", 0, 0)
	}
}
