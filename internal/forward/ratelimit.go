package forward

import (
	"errors"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/wsproxy/wsproxy/internal/metrics"
)

// errRateLimited: the sender went over --message-rate or --byte-rate with
// --rate-limit-action=close.
var errRateLimited = errors.New("over the connection's rate limit")

// rateLimit paces what one connection sends (SPEC section 10). Throttling
// stops reading until the connection's tokens are back: its sender meets TCP
// backpressure, nothing is lost, and the sender is parked meanwhile, so the
// wait never counts as a stall. With close, going over ends the connection
// with 1008 "rate limited".
type rateLimit struct {
	msgs, bytesIn *rate.Limiter // nil: that rate is not limited
	close         bool
	from          Sender
	stop          <-chan struct{}
	metrics       *metrics.Metrics
}

// newRateLimit returns the pacing for a member's connection, or nil if no
// rate is set.
func (s *Server) newRateLimit(from Sender) *rateLimit {
	o := s.opts
	if o.MessageRate <= 0 && o.ByteRate <= 0 {
		return nil
	}
	l := &rateLimit{close: o.RateLimitClose, from: from, stop: from.sess.Closing(), metrics: s.metrics}
	if o.MessageRate > 0 {
		l.msgs = rate.NewLimiter(rate.Limit(o.MessageRate), MessageBurst(o.MessageRate, o.MessageBurst))
	}
	if o.ByteRate > 0 {
		l.bytesIn = rate.NewLimiter(rate.Limit(o.ByteRate), ByteBurst(o.ByteRate, o.ByteBurst))
	}
	return l
}

// message takes a token for a new message.
func (l *rateLimit) message() error {
	if l.msgs == nil {
		return nil
	}
	return l.take(l.msgs, 1)
}

// bytes takes n tokens for payload bytes just read.
func (l *rateLimit) bytes(n int) error {
	if l.bytesIn == nil {
		return nil
	}
	return l.take(l.bytesIn, n)
}

// take takes n tokens from lim, in pieces no larger than its burst, waiting
// for each (throttle) or failing if any is not there now (close). It fails
// with errAbandoned if the sender is closed while it waits.
func (l *rateLimit) take(lim *rate.Limiter, n int) error {
	for n > 0 {
		k := min(n, lim.Burst())
		n -= k
		now := time.Now()
		if lim.AllowN(now, k) {
			continue // the common case, without ReserveN's allocation
		}
		r := lim.ReserveN(now, k)
		d := r.DelayFrom(now)
		if d <= 0 {
			continue
		}
		l.metrics.RateLimited(l.close)
		if l.close {
			r.CancelAt(now)
			return errRateLimited
		}
		if err := l.wait(d); err != nil {
			return err
		}
	}
	return nil
}

func (l *rateLimit) wait(d time.Duration) error {
	l.from.park()
	defer l.from.unpark()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-l.stop:
		return errAbandoned
	}
}

// MessageBurst is the message burst in effect: burst if set, else one
// second's worth of rate (at least 1).
func MessageBurst(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(math.Ceil(rate)))
}

// ByteBurst is the byte burst in effect: burst if set, else one second's
// worth of rate, at least 64 KiB.
func ByteBurst(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(64<<10, int(math.Ceil(rate)))
}
