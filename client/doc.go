// Package client talks to a wsproxy proxy: it joins a group and sends and
// receives its messages.
//
// Two layers:
//
//   - [Conn] is one connection, no reconnect: [Dial] it, read each message as
//     a stream with [Conn.Next], write each one as a stream with
//     [Conn.Writer] (or whole with [Conn.Send]). A message of any size passes
//     through a few buffers of 32 KiB; it is never held whole.
//   - [Client] reconnects by the project's shared policy ([DefaultPolicy],
//     the table in docs/protocol.md section 6, Reconnecting that the browser page follows
//     too), runs handlers in arrival order, and carries typed JSON messages
//     in the envelope of docs/protocol.md section 13 ([On], [Request],
//     [Client.SendJSON]).
//
// # Contexts
//
// coder/websocket, underneath, closes the whole connection when the context
// of a read or write expires. This package never hands a caller's context to
// it: a caller's context bounds only the caller's own wait (for the next
// message, for the right to write, for a connection, for a reply). The one
// exception is a message already part-way on the wire: it cannot be taken
// back, so if its context ends before it is finished the connection is
// closed (receivers part-way through get 4002 from the proxy) and the write
// returns [ErrMessageAborted].
//
// # Errors
//
// A refused handshake is a [*HandshakeError] (HTTP status, the proxy's JSON
// reason, Retry-After). A connection the proxy closed is a [*CloseError]
// (close code and reason). A connection that dropped without a close frame is
// [ErrConnectionLost]; one this side closed is [ErrClosed].
//
// # What the proxy does not do
//
// The proxy forwards bytes and never parses messages: the envelope's "from"
// is what the sending library claims, not verified by the proxy; replies go
// to the whole group (only the asker matches them). The proxy delivers a
// message to the members connected when it starts: nothing is stored for a
// member that is away, and this package never re-sends anything after a
// reconnect.
//
// # Presence
//
// [Watch] watches who is in a group and who joins and leaves
// (docs/protocol.md section 11, /ws/events), on a connection of its own
// beside the data connection: a [Watcher]'s [Watcher.Next] returns a
// [Snapshot] first, then a [Join] or [Leave] per change (a leave with the
// member's close code, and [Event.Why] in the browser page's words). It
// reconnects by the shared policy and resumes from the last event seen: the
// events missed, or a fresh Snapshot when the proxy no longer has them.
package client
