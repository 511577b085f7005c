package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrClosed: this side closed the connection (or the Client's Run ended).
	ErrClosed = errors.New("client: connection closed")
	// ErrConnectionLost: the connection dropped without a close frame
	// (network trouble, the proxy went away). A message being sent may have
	// reached some receivers; it is never sent again by this package.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrMessageAborted: a message's context ended while it was part-way on
	// the wire, so the connection was closed to abandon it.
	ErrMessageAborted = errors.New("client: message abandoned part-way, connection closed")
	// ErrTooLarge: a message was larger than the caller allowed.
	ErrTooLarge = errors.New("client: message too large")
)

// HandshakeError is a connection the proxy refused before the upgrade.
type HandshakeError struct {
	Status     int           // HTTP status, such as 400, 401, 403, 429 or 503
	Reason     string        // the proxy's JSON "error" text, or the start of the body
	RetryAfter time.Duration // from Retry-After; 0 if absent
}

func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("proxy refused the connection: %d %s", e.Status, http.StatusText(e.Status))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

func handshakeError(resp *http.Response) *HandshakeError {
	e := &HandshakeError{Status: resp.StatusCode}
	if resp.Body != nil {
		b := make([]byte, 1024)
		n, _ := resp.Body.Read(b) // coder/websocket kept the first 1 KiB in memory
		b = b[:n]
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &body) == nil && body.Error != "" {
			e.Reason = body.Error
		} else {
			e.Reason = strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
			if len(e.Reason) > 200 {
				e.Reason = e.Reason[:200]
			}
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(s); err == nil {
			e.RetryAfter = max(0, time.Until(t))
		}
	}
	return e
}

// CloseError is a connection the proxy (or the peer) closed with a close
// frame. Codes and reasons: docs/protocol.md section 6.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("closed by the proxy: %d", e.Code)
	}
	return fmt.Sprintf("closed by the proxy: %d %s", e.Code, e.Reason)
}
