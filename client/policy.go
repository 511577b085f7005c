package client

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// Retry describes why a connection ended (or an attempt failed), for a
// Policy to decide what to do next.
type Retry struct {
	// Attempt counts the reconnects since the last connection that stayed up
	// at least StableAfter (0 for the first).
	Attempt int
	// Streak counts the consecutive ends with this same cause (the same close
	// code or HTTP status), 1 for the first.
	Streak int
	// Code is the close code (CloseCode), 0 if the connection never opened.
	Code int
	// HTTPStatus is the handshake's status when the proxy refused it, else 0.
	HTTPStatus int
	// RetryAfter is the proxy's Retry-After, 0 if none.
	RetryAfter time.Duration
	// HasTokenSource says whether a fresh token can be fetched.
	HasTokenSource bool
	// Err is the error itself.
	Err error
}

// Policy decides whether to reconnect and after how long.
type Policy func(Retry) (delay time.Duration, reconnect bool)

// StableAfter is how long a connection must stay up for Attempt to start
// again from 0, so that "accepted, then closed at once" still backs off.
const StableAfter = 10 * time.Second

// Backoff bounds: the delay before attempt n is drawn uniformly from the
// upper half of min(BackoffMax, BackoffBase * 2^n).
const (
	BackoffBase = time.Second
	BackoffMax  = 30 * time.Second
)

// Close codes not in net/http's world (docs/protocol.md section 6).
const (
	CodeAbnormal = 1006 // no close frame: the connection dropped
)

// Action is what the shared policy does for a cause.
type Action string

const (
	Stop       Action = "stop"          // do not reconnect
	Now        Action = "now"           // reconnect at once
	Later      Action = "later"         // after a random 1-5 s
	Backoff    Action = "backoff"       // after Backoff
	BackoffMin Action = "backoff >= 5s" // Backoff, but at least 5 s
)

// CloseAction is the shared policy for a close code: the last column of
// the table in docs/protocol.md section 6, Reconnecting, which the browser page follows
// too. 1006 stands for a connection lost without a close frame.
func CloseAction(code int) Action {
	switch code {
	case 1000, 1002, 1003, 1007, 1009, 1010, 4001, 4003:
		return Stop
	case 1001, 4004:
		return Later
	case 1013:
		return BackoffMin
	case 4002, 4005:
		return Now
	}
	if code >= 4000 && code < 5000 {
		return Stop // an application's own refusal we do not know
	}
	return Backoff // 1005, 1006, 1008, 1011, 1012, 1014 and the rest
}

// HTTPAction is the shared policy for a refused handshake.
func HTTPAction(status int) Action {
	switch status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return Backoff // or Retry-After, when given
	case http.StatusUnauthorized:
		return Now // once, with a fresh token; see DefaultPolicy
	}
	if status >= 500 {
		return Backoff
	}
	return Stop // 400, 403, 404, 405, 426: asking again will not help
}

// DefaultPolicy is the project's shared reconnect policy (docs/protocol.md
// section 6, Reconnecting): CloseAction and HTTPAction, with these refinements: a
// Retry-After is obeyed; a 401 is retried at once only with a TokenSource
// and only once in a row; a 4005 (token expired) is retried at once the
// first time, then backs off; a network error before any close frame backs
// off. The delays are jittered so that many clients do not return together.
func DefaultPolicy(r Retry) (time.Duration, bool) {
	var a Action
	switch {
	case r.HTTPStatus != 0:
		a = HTTPAction(r.HTTPStatus)
		if r.HTTPStatus == http.StatusUnauthorized && (!r.HasTokenSource || r.Streak > 1) {
			a = Stop
		}
		if r.RetryAfter > 0 && a != Stop {
			return r.RetryAfter + jitter(time.Second), true
		}
	case r.Code != 0:
		a = CloseAction(r.Code)
		if r.Code == 4005 && r.Streak > 1 {
			a = Backoff
		}
	case errors.Is(r.Err, ErrClosed):
		a = Stop
	default:
		a = Backoff // could not reach the proxy, or the connection dropped
	}
	switch a {
	case Now:
		return 0, true
	case Later:
		return time.Second + jitter(4*time.Second), true
	case Backoff:
		return backoff(r.Attempt), true
	case BackoffMin:
		return max(5*time.Second, backoff(r.Attempt)), true
	}
	return 0, false
}

// NoReconnect never reconnects: Run returns when the first connection ends.
func NoReconnect(Retry) (time.Duration, bool) { return 0, false }

func backoff(attempt int) time.Duration {
	ceiling := BackoffMax
	if attempt < 10 {
		ceiling = min(BackoffMax, BackoffBase<<attempt)
	}
	return ceiling/2 + jitter(ceiling/2)
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
