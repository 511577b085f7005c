package forward

import (
	"errors"
	"io"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsproxy/wsproxy/internal/message"
	"github.com/wsproxy/wsproxy/internal/utf8stream"
)

// Why a sender's message was not forwarded. classifyEnd maps each to a close
// code.
var (
	errTooBig      = errors.New("message over --max-message-bytes")
	errInvalidUTF8 = errors.New("text message is not valid UTF-8")
	errStalled     = errors.New("message made too little progress for --message-idle-timeout")
	errTruncated   = errors.New("connection dropped in the middle of a message")
	// errAbandoned: the source gave up on the message before it was whole
	// (the sender is closing: replaced, kicked, evicted, shut down; or the
	// API request was cancelled). Nobody gets any of it; receivers part-way
	// through a streamed one are closed with 4002.
	errAbandoned = errors.New("message abandoned by its source")
)

// firstBufSize is the buffer a message is first read into; it grows by
// doubling up to --buffer-bytes.
const firstBufSize = 4 << 10

// source is where the message being relayed is read from: a member's
// connection or an admin API request body. Its fields other than r, typ and
// read last as long as the source.
type source struct {
	r   io.Reader
	typ websocket.MessageType
	// read counts payload bytes of the message read so far.
	read int64

	// stop closes when the source is going away: its unfinished message is
	// abandoned (errAbandoned).
	stop <-chan struct{}
	// truncated reports, at io.EOF, whether the message was cut short.
	truncated func() bool
	// watch, if set, watches the message's progress.
	watch *stallWatch
	// rate, if set, paces what the source sends (--message-rate,
	// --byte-rate).
	rate *rateLimit
	// remote: the message comes from another node, through the bus; it
	// goes to this node's members only.
	remote bool
}

// next reads the next bytes of the message into p, enforcing limit (0: none)
// and telling a cut-short message (errTruncated) and a stalled one
// (errStalled) from a complete one.
func (src *source) next(p []byte, limit int64) (int, error) {
	n, err := src.r.Read(p)
	src.read += int64(n)
	if limit > 0 && src.read > limit {
		return n, errTooBig
	}
	if n > 0 && src.rate != nil {
		if rerr := src.rate.bytes(n); rerr != nil {
			return n, rerr
		}
	}
	if err == io.EOF && src.truncated != nil && src.truncated() {
		err = errTruncated
	}
	if err != nil && err != io.EOF && src.watch != nil && src.watch.stalled() {
		err = errStalled
	}
	return n, err
}

// abandoned reports whether the source is going away.
func (src *source) abandoned() bool {
	select {
	case <-src.stop:
		return true
	default:
		return false
	}
}

// relay reads one message from src and sends it from `from` to `to`. It
// returns the number of receivers it was queued for.
//
// A message up to --buffer-bytes is read whole into one Buf, then handed to
// sendBuf. A larger one is relayed through a Stream as it arrives. Text is
// checked for UTF-8 before any of it is made visible to a receiver (for a
// stream: before each piece), so invalid text is never delivered as a
// message. A message whose source goes away before it is whole is abandoned.
func (s *Server) relay(src *source, from Sender, to recipients) (int, error) {
	limit := s.opts.MaxMessageBytes
	first := min(firstBufSize, s.opts.BufferBytes)
	if err := s.reserve(src, from, int64(message.BufSize(first))); err != nil {
		return 0, err
	}
	b := message.GetBuf(first)
	if s.budget != nil {
		b.Charge(s.budget, from.pinned())
	}
	b.Type = src.typ
	grown := false
	for {
		if len(b.B) == cap(b.B) {
			if len(b.B) >= s.opts.BufferBytes {
				// Full at the threshold: one byte more makes it a stream.
				var probe [1]byte
				n, err := src.next(probe[:], limit)
				if n == 1 {
					return s.relayStream(src, from, to, b, probe[0])
				}
				if err == io.EOF {
					break
				}
				b.Release()
				from.held(0)
				return 0, err
			}
			more := min(cap(b.B), s.opts.BufferBytes-len(b.B))
			if err := s.reserve(src, from, int64(b.GrowSize(more))); err != nil {
				b.Release()
				from.held(0)
				return 0, err
			}
			b = b.Grow(more)
			// A message that outgrew its first buffer is worth the
			// budget's attention (memory.go); a small one never is.
			grown = true
			from.held(b.Charged())
		}
		n, err := src.next(b.B[len(b.B):min(cap(b.B), s.opts.BufferBytes)], limit)
		b.B = b.B[:len(b.B)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Release()
			from.held(0)
			return 0, err
		}
	}
	if grown {
		from.held(0) // whole: from now on its receivers hold it
	}
	if b.Type == websocket.MessageText && !utf8.Valid(b.B) {
		b.Release()
		return 0, errInvalidUTF8
	}
	if src.abandoned() {
		b.Release()
		return 0, errAbandoned
	}
	if ws := s.busOpen(src, from, to); ws != nil {
		// To other nodes first, then here: either order keeps each
		// receiver's messages in their sender's order.
		if err := busSend(ws, b.B); err != nil {
			busAbort(ws)
			b.Release()
			return 0, err
		}
	}
	s.received(from, src.typ, int64(len(b.B)))
	return s.sendBuf(from, to, b), nil
}

func (s *Server) received(from Sender, typ websocket.MessageType, n int64) {
	s.metrics.Received(typ, n)
	if from.sess != nil {
		from.sess.CountIn(n)
	}
}

// relayStream relays a message larger than --buffer-bytes. head holds its
// first --buffer-bytes and next is the byte after them. It takes over head.
func (s *Server) relayStream(src *source, from Sender, to recipients, head *message.Buf, next byte) (int, error) {
	defer from.held(0)
	if err := s.reserve(src, from, int64(s.rings.Size())); err != nil {
		head.Release()
		return 0, err
	}
	from.held(int64(s.rings.Size()))
	p := &producer{src: src, from: from, st: message.NewStreamOwned(src.typ, s.rings, s.streamOwner(from)), text: src.typ == websocket.MessageText}
	// The bus first: its writers hold the groups' place on the bus from
	// before the local placement (see Bus.Open).
	p.bus = s.busOpen(src, from, to)
	placed := s.openStream(from, to, p.st)
	if src.watch != nil {
		src.watch.holding(func() bool { return holdsOthers(placed) })
		defer src.watch.holding(nil)
	}
	err := p.write(head.B)
	head.Release()
	if err == nil {
		err = p.write([]byte{next})
	}
	for err == nil {
		var room []byte
		if room, err = p.space(); err != nil {
			break
		}
		n, rerr := src.next(room, s.opts.MaxMessageBytes)
		if err = p.commit(room[:n]); err != nil {
			break
		}
		if rerr == io.EOF {
			if p.text && !p.v.Close() {
				err = errInvalidUTF8
				break
			}
			if src.abandoned() {
				err = errAbandoned
				break
			}
			p.st.Finish()
			busEnd(p.bus)
			s.received(from, src.typ, src.read)
			return len(placed), nil
		}
		err = rerr
	}
	p.st.Abort()
	busAbort(p.bus)
	return 0, err
}

// producer feeds a Stream from its source.
type producer struct {
	src  *source
	from Sender
	st   *message.Stream
	text bool
	v    utf8stream.Validator
	bus  []BusWriter // other nodes' share of the message (nil: none)
}

// space returns room in the ring, waiting for receivers if there is none
// (the sender is parked meanwhile: the wait is never its fault). It fails
// with errAbandoned once the source is going away.
func (p *producer) space() ([]byte, error) {
	if p.src.abandoned() {
		return nil, errAbandoned
	}
	if room := p.st.Room(); room != nil {
		return room, nil
	}
	p.from.park()
	defer p.from.unpark()
	room, err := p.st.Space(p.src.stop)
	if err != nil {
		return nil, errAbandoned
	}
	return room, nil
}

// commit publishes the bytes just written into the room space returned,
// once they are known to keep a text message valid UTF-8 so far.
func (p *producer) commit(b []byte) error {
	if p.text && !p.v.Write(b) {
		return errInvalidUTF8
	}
	p.st.Commit(len(b))
	// The committed bytes stay in the ring, unchanged, until the next
	// Space: they can be sent from there.
	return busWrite(p.bus, b)
}

// write copies b into the stream.
func (p *producer) write(b []byte) error {
	for len(b) > 0 {
		room, err := p.space()
		if err != nil {
			return err
		}
		n := copy(room, b)
		if err := p.commit(room[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
