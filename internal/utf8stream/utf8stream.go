// Package utf8stream validates UTF-8 that arrives in pieces split at
// arbitrary byte boundaries, as the fragments of a WebSocket text message do.
package utf8stream

import "unicode/utf8"

// Validator checks a byte stream for valid UTF-8 without holding it.
// The zero value is ready to use. It is not safe for concurrent use.
type Validator struct {
	pending [utf8.UTFMax]byte // the start of a rune split across pieces
	n       int
}

// Write checks the next piece and reports whether everything so far can still
// be (the start of) valid UTF-8.
func (v *Validator) Write(p []byte) bool {
	if v.n > 0 {
		// Complete the split rune with up to 3 bytes from p.
		need := 0
		for need < len(p) && v.n+need < utf8.UTFMax {
			v.pending[v.n+need] = p[need]
			need++
			if utf8.FullRune(v.pending[:v.n+need]) {
				break
			}
		}
		buf := v.pending[:v.n+need]
		if !utf8.FullRune(buf) {
			v.n += need // still incomplete: p was too short
			return true
		}
		r, size := utf8.DecodeRune(buf)
		if r == utf8.RuneError && size <= 1 {
			return false
		}
		p = p[size-v.n:]
		v.n = 0
	}
	// Hold back an incomplete rune at the end of p.
	tail := incompleteTail(p)
	if !utf8.Valid(p[:len(p)-tail]) {
		return false
	}
	v.n = copy(v.pending[:], p[len(p)-tail:])
	return true
}

// Close reports whether the stream ended on a rune boundary, with everything
// valid. Write must have returned true for every piece.
func (v *Validator) Close() bool { return v.n == 0 }

// incompleteTail returns how many bytes at the end of p start a rune that p
// does not complete (0 to 3). Invalid bytes are left for utf8.Valid to reject.
func incompleteTail(p []byte) int {
	for i := 1; i < utf8.UTFMax && i <= len(p); i++ {
		b := p[len(p)-i]
		if b < utf8.RuneSelf {
			return 0 // ASCII: nothing pending
		}
		if utf8.RuneStart(b) {
			if utf8.FullRune(p[len(p)-i:]) {
				return 0
			}
			return i
		}
	}
	return 0
}
