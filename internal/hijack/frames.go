package hijack

// Server-to-client WebSocket frames (RFC 6455 section 5.2): never masked, and
// the proxy negotiates no extension, so the reserved bits are always 0.

// Opcode is a WebSocket frame opcode (RFC 6455 section 5.2).
type Opcode byte

// The data frame opcodes: a message is one OpText or OpBinary frame followed
// by any number of OpContinuation frames, the last one with FIN set.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
)

const (
	opClose = 0x8
	finBit  = 0x80
)

// MaxHeaderLen is the longest header AppendHeader and AppendFrameHeader write.
const MaxHeaderLen = 10

// maxCloseReason is the longest reason a close frame can carry: a control
// frame's payload is at most 125 bytes, 2 of them the status code.
const maxCloseReason = 123

// AppendHeader appends the header of one final, unmasked data frame carrying
// a whole message of n bytes: text if text is set, else binary.
func AppendHeader(dst []byte, text bool, n int) []byte {
	op := OpBinary
	if text {
		op = OpText
	}
	return AppendFrameHeader(dst, op, true, n)
}

// AppendFrameHeader appends the header of one unmasked data frame of n
// payload bytes: op is OpText or OpBinary for a message's first frame,
// OpContinuation for the others; fin marks its last frame.
func AppendFrameHeader(dst []byte, op Opcode, fin bool, n int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= finBit
	}
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		u := uint64(n)
		return append(dst, b0, 127,
			byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32), byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
}

// frameScanner follows the stream of server frames the socket has accepted,
// to know where frames begin and whether a close frame has gone out.
type frameScanner struct {
	hdr       [MaxHeaderLen]byte
	hdrN      int   // header bytes seen of the frame being scanned
	remaining int64 // payload bytes still to come of that frame
	inClose   bool  // that frame is a close frame

	closeStarted bool // the first byte of a close frame has been scanned
	closeWhole   bool // the last byte of a close frame has been scanned
}

// atBoundary reports whether the bytes scanned so far end with a whole frame.
func (f *frameScanner) atBoundary() bool { return f.hdrN == 0 && f.remaining == 0 }

// scan takes the next bytes of the stream, and returns how many it took:
// all of p, unless a close frame ends inside p; then it stops right after
// that frame, since nothing may follow it.
func (f *frameScanner) scan(p []byte) int {
	n := len(p)
	for len(p) > 0 {
		if f.remaining > 0 {
			k := min(int64(len(p)), f.remaining)
			f.remaining -= k
			p = p[k:]
			if f.remaining == 0 && f.endFrame() {
				break
			}
			continue
		}
		f.hdr[f.hdrN] = p[0]
		f.hdrN++
		p = p[1:]
		if f.hdrN == 1 {
			if f.hdr[0]&0x0f == opClose {
				f.inClose, f.closeStarted = true, true
			}
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need = 4
		case 127:
			need = 10
		}
		if f.hdrN < need {
			continue
		}
		var l int64
		switch need {
		case 2:
			l = int64(f.hdr[1] & 0x7f)
		case 4:
			l = int64(f.hdr[2])<<8 | int64(f.hdr[3])
		default:
			for _, b := range f.hdr[2:10] {
				l = l<<8 | int64(b)
			}
		}
		f.remaining, f.hdrN = l, 0
		if l == 0 && f.endFrame() {
			break
		}
	}
	return n - len(p)
}

// endFrame notes that a frame's last byte has been scanned, and reports
// whether it was a close frame.
func (f *frameScanner) endFrame() bool {
	if !f.inClose {
		return false
	}
	f.inClose, f.closeWhole = false, true
	return true
}
