package hijack

import "unicode/utf8"

// Client-to-server frames (RFC 6455 section 5.2): masked, so a header is up
// to 14 bytes: 2, an extended length of 0, 2 or 8, and a 4-byte mask key.
const maxClientHeaderLen = 14

// frameParser follows the client's frames through the bytes Conn.Read hands
// to the library, each once, for what the library does not tell: how much
// data payload has arrived, and whether a close frame's reason is UTF-8.
// It walks headers byte by byte, skips payloads by arithmetic, and copies
// only close frames' payloads. It trusts the frames no further than that:
// the library checks them (and fails the connection on what it refuses).
type frameParser struct {
	hdr     [maxClientHeaderLen]byte
	hdrN    int   // header bytes seen of the next frame
	left    int64 // payload bytes still to come of the current frame
	data    bool  // the current frame is a data frame: its payload counts
	inClose bool  // the current frame is a close frame with a payload
	key     [4]byte
	close   []byte // the close frame's payload so far, unmasked
}

// scan follows p, the next bytes to be handed to the library. It returns how
// many of them may be handed out and how much data payload those carry. That
// is all of p, unless p holds the last byte of a close frame whose reason is
// not UTF-8: then scan stops before that byte and returns ok false, and the
// parser must not be used again.
func (f *frameParser) scan(p []byte) (n int, payload int64, ok bool) {
	for n < len(p) {
		if f.left > 0 {
			k := int(min(int64(len(p)-n), f.left))
			switch {
			case f.data:
				payload += int64(k)
			case f.inClose:
				for _, b := range p[n : n+k] {
					f.close = append(f.close, b^f.key[len(f.close)&3])
				}
			}
			n += k
			f.left -= int64(k)
			if f.left == 0 && f.inClose {
				f.inClose = false
				if !validClosePayload(f.close) {
					return n - 1, payload, false
				}
			}
			continue
		}
		if f.hdrN == 0 && len(p)-n >= 2 {
			if l := clientHeaderLen(p[n+1]); len(p)-n >= l { // a whole header
				copy(f.hdr[:], p[n:n+l])
				n += l
				f.startFrame()
				continue
			}
		}
		f.hdr[f.hdrN] = p[n]
		f.hdrN++
		n++
		if f.hdrN >= 2 && f.hdrN == clientHeaderLen(f.hdr[1]) {
			f.startFrame()
		}
	}
	return n, payload, true
}

// clientHeaderLen returns the length of a header whose second byte is b1.
func clientHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// startFrame takes the frame whose header is complete in f.hdr.
func (f *frameParser) startFrame() {
	var l int64
	k := 2
	switch l = int64(f.hdr[1] & 0x7f); l {
	case 126:
		l, k = int64(f.hdr[2])<<8|int64(f.hdr[3]), 4
	case 127:
		l = 0
		for _, b := range f.hdr[2:10] {
			l = l<<8 | int64(b)
		}
		k = 10
	}
	f.key = [4]byte{}
	if f.hdr[1]&0x80 != 0 {
		copy(f.key[:], f.hdr[k:k+4])
	}
	op := f.hdr[0] & 0x0f
	f.hdrN = 0
	f.left = max(l, 0) // the library refuses a negative length
	f.data = op <= byte(OpBinary)
	// A close payload over 125 bytes the library refuses by its header.
	f.inClose = op == opClose && l > 0 && l <= 125
	if f.inClose {
		if f.close == nil {
			f.close = make([]byte, 0, 125)
		}
		f.close = f.close[:0]
	}
}

// validClosePayload reports whether a close frame's payload may be handed
// to the library: it checks only what the library does not, that the reason
// after the 2-byte code is UTF-8 (RFC 6455 section 5.5.1). The library
// refuses a payload of 1 byte, or a code that may not be sent, itself, with
// 1002; it would echo a reason that is not UTF-8 as a clean close.
func validClosePayload(p []byte) bool { return len(p) < 3 || utf8.Valid(p[2:]) }
