package forward

import (
	"time"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/session"
)

// The memory budget (--memory-limit; docs/protocol.md "Memory budget").
//
// Everything a message pins is acquired from s.budget before it is
// allocated: the Buf a message is read into (and each doubling of it), and a
// streamed message's ring. Queues hold references to those Bufs, so queued
// bytes are inside the budget too. When the budget is spent, a reader waits
// before reading on (TCP backpressure on its sender; it is parked, so the
// wait never counts as a stall) until memory comes back.
//
// Memory comes back by itself as receivers write. When it does not, the
// reclaim loop, which runs while any reader waits, closes the connection
// that pins the most of it among those that would take longer than
// progressWindow to give it back at the pace they went over the last window:
//   - a receiver, by its queued bytes against the bytes its socket accepted:
//     1008 "slow consumer";
//   - a sender, by the unfinished message it holds (its Buf or its stream's
//     ring) against the payload bytes it sent: 1008 "message stalled" (a
//     message trickling in, or one that cannot get memory to go on). A
//     sender parked on its receivers (not on the budget) is left alone: its
//     receivers are the ones behind, and they are judged as receivers.
//
// So a receiver that keeps up, however much it has queued for a moment, or a
// large message arriving at speed, is never the one closed. The loop closes
// at most one connection per reclaimTick, and none before readers have
// waited reclaimGrace and it has watched everyone for a whole window. Nobody
// holding less than minVictimBytes is closed: the largest holder holds at
// least the average, so when even it holds little the budget is shared by
// many small holders, and waiting is right.
const (
	reclaimTick    = 50 * time.Millisecond
	reclaimGrace   = 100 * time.Millisecond
	progressWindow = time.Second
	minVictimBytes = 64 << 10
)

// progress is what the reclaim loop knows of one connection's pace.
type progress struct {
	at      time.Time // the start of the current window
	out, in int64     // bytes out and payload in at its start
	rated   bool      // outRate and inRate are from a whole window
	outRate float64   // bytes the socket accepted per second
	inRate  float64   // payload bytes read per second
}

// watch updates p with what m has done up to now.
func (p *progress) watch(m *session.Session, now time.Time) {
	out, in := m.NetConn().BytesOut(), m.NetConn().PayloadIn()
	if p.at.IsZero() {
		p.at, p.out, p.in = now, out, in
		return
	}
	if d := now.Sub(p.at); d >= progressWindow {
		p.outRate = float64(out-p.out) / d.Seconds()
		p.inRate = float64(in-p.in) / d.Seconds()
		p.rated = true
		p.at, p.out, p.in = now, out, in
	}
}

// slow reports whether holding held bytes, at rate bytes a second, would
// take more than a window to give them back.
func slow(held int64, rate float64) bool {
	return rate*progressWindow.Seconds() < float64(held)
}

// reserve acquires n bytes of the memory budget for src's message, waiting
// while it is spent. The sender is parked meanwhile. It fails with
// errAbandoned if the source goes away first.
func (s *Server) reserve(src *source, from Sender, n int64) error {
	if s.budget.TryAcquire(n) {
		return nil
	}
	from.park()
	if from.sess != nil {
		from.sess.SetMemoryWait(true)
	}
	err := s.budget.Acquire(n, src.stop)
	if from.sess != nil {
		from.sess.SetMemoryWait(false)
	}
	from.unpark()
	if err != nil {
		return errAbandoned
	}
	return nil
}

// reclaim runs while readers wait for the budget (the budget starts it when
// a first reader begins to wait; at most one runs).
func (s *Server) reclaim() {
	if !s.reclaiming.CompareAndSwap(false, true) {
		return
	}
	t := time.NewTicker(reclaimTick)
	defer t.Stop()
	seen := map[*session.Session]*progress{}
	for range t.C {
		n, since := s.budget.Waiting()
		if n == 0 {
			s.reclaiming.Store(false)
			// A wait that began just now started a reclaim that found
			// this one still running: take over from it.
			if n, _ = s.budget.Waiting(); n == 0 || !s.reclaiming.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		now := time.Now()
		sessions := s.registry.Sessions()
		next := make(map[*session.Session]*progress, len(sessions))
		for _, m := range sessions {
			p := seen[m]
			if p == nil {
				p = &progress{}
			}
			p.watch(m, now)
			next[m] = p
		}
		seen = next
		if now.Sub(since) >= reclaimGrace {
			s.evictForMemory(seen)
		}
	}
}

// evictForMemory closes the connection that pins the most of the budget
// among the slow ones (see above), if any pins minVictimBytes.
func (s *Server) evictForMemory(seen map[*session.Session]*progress) {
	var victim *session.Session
	var most int64
	asSender := false
	for m, p := range seen {
		if !p.rated {
			continue
		}
		select {
		case <-m.Closing():
			continue // already going: what it holds is on its way back
		default:
		}
		if q := m.QueuedBytes(); q > most && slow(q, p.outRate) {
			victim, most, asSender = m, q, false
		}
		if h, _ := m.Held(); h > most && slow(h, p.inRate) {
			if parked, _ := m.Parks(); parked && !m.MemoryWait() {
				continue
			}
			victim, most, asSender = m, h, true
		}
	}
	if victim == nil || most < minVictimBytes {
		return
	}
	if asSender {
		victim.Close(websocket.StatusPolicyViolation, "message stalled")
		s.metrics.Evicted("memory_unfinished")
		victim.Log().Warn().Int64("held_bytes", most).Int64("memory_used", s.budget.Used()).
			Msg("memory budget spent: closing the sender of the unfinished message holding the most")
		return
	}
	victim.Evict(session.EvictMemory)
}
