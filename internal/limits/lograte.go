package limits

import (
	"sync"
	"time"
)

// LogLimiter bounds how often something is logged: at most one line per key
// per interval, with the number of lines suppressed since the last one. Keys
// must come from a fixed set (such as Reasons): the limiter keeps one entry
// per key forever. Safe for concurrent use.
type LogLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*logKey // guarded by mu
}

type logKey struct {
	next       time.Time
	suppressed int
}

// NewLogLimiter allows one line per key per interval.
func NewLogLimiter(interval time.Duration) *LogLimiter {
	return &LogLimiter{interval: interval, now: time.Now, keys: map[string]*logKey{}}
}

// Allow reports whether a line for key may be logged now and, if so, how
// many were suppressed since the previous one (to log with it).
func (l *LogLimiter) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys[key]
	if k == nil {
		k = &logKey{}
		l.keys[key] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.next, k.suppressed = now.Add(l.interval), 0
	return true, n
}
