package utf8stream_test

import (
	"bytes"
	"fmt"
	"testing"
	"unicode/utf8"

	"github.com/wsproxy/wsproxy/internal/utf8stream"
)

// validate feeds pieces to a new Validator and returns its verdict, checking
// after every piece that Write answers exactly whether the bytes so far can
// still be the start of valid UTF-8.
func validate(t *testing.T, pieces [][]byte) bool {
	t.Helper()
	var v utf8stream.Validator
	var sofar []byte
	for i, p := range pieces {
		sofar = append(sofar, p...)
		ok := v.Write(p)
		if want := extendable(sofar); ok != want {
			t.Fatalf("after piece %d (% x), Write = %v; want %v for % x", i, p, ok, want, sofar)
		}
		if !ok {
			return false
		}
	}
	return v.Close()
}

// extendable reports whether some bytes appended to p make it valid UTF-8.
// Every rune's first continuation byte lies in one of 80-8F, 90-9F, A0-BF
// (which range depends on the first byte), the others anywhere in 80-BF.
func extendable(p []byte) bool {
	if utf8.Valid(p) {
		return true
	}
	for k := 1; k < utf8.UTFMax; k++ {
		for _, c := range []byte{0x80, 0x90, 0xA0} {
			q := append(append([]byte(nil), p...), c)
			q = append(q, bytes.Repeat([]byte{0x80}, k-1)...)
			if utf8.Valid(q) {
				return true
			}
		}
	}
	return false
}

// splits returns b whole, cut at every single point, and byte by byte.
func splits(b []byte) [][][]byte {
	out := [][][]byte{{b}}
	for i := 0; i <= len(b); i++ {
		out = append(out, [][]byte{b[:i], b[i:]})
	}
	var each [][]byte
	for i := range b {
		each = append(each, b[i:i+1])
	}
	return append(out, each)
}

func TestValidator(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", true},
		{"ascii", "hello, world", true},
		{"2-byte rune", "h\u00e9llo", true},     // é: C3 A9
		{"3-byte rune", "price \u20ac5", true},  // €: E2 82 AC
		{"4-byte rune", "go \U0001F600!", true}, // 😀: F0 9F 98 80
		{"mixed runes", "a\u00e9\u20ac\U0001F600z", true},
		{"only multibyte", "\u00e9\u20ac\U0001F600\u00e9", true},
		{"U+FFFD literal", "ok \uFFFD ok", true}, // EF BF BD is valid
		{"largest rune", "\U0010FFFF", true},     // F4 8F BF BF
		{"largest 3-byte", "\uFFFF", true},       // EF BF BF
		{"before surrogates", "\uD7FF", true},    // ED 9F BF
		{"after surrogates", "\uE000", true},     // EE 80 80
		{"NUL is valid UTF-8", "a\x00b", true},
		{"overlong 2-byte NUL", "a\xc0\x80", false},
		{"overlong 2-byte", "\xc1\xbf", false},
		{"overlong 3-byte", "\xe0\x80\x80", false},
		{"overlong 3-byte max", "\xe0\x9f\xbf", false},
		{"overlong 4-byte", "\xf0\x80\x80\x80", false},
		{"overlong 4-byte max", "\xf0\x8f\xbf\xbf", false},
		{"surrogate low end", "\xed\xa0\x80", false},  // U+D800
		{"surrogate high end", "\xed\xbf\xbf", false}, // U+DFFF
		{"above U+10FFFF", "\xf4\x90\x80\x80", false},
		{"F5 lead byte", "\xf5\x80\x80\x80", false},
		{"FF byte", "ab\xff", false},
		{"lone continuation", "a\x80b", false},
		{"continuation at start", "\xbf", false},
		{"lead then ASCII", "\xc3(", false},
		{"3-byte lead then ASCII", "\xe2\x82(", false},
		{"4-byte lead then ASCII", "\xf0\x9f\x98(", false},
		{"too many continuations", "\xc3\xa9\xa9", false},
		{"truncated 2-byte at end", "abc\xc3", false},
		{"truncated 3-byte at end", "abc\xe2\x82", false},
		{"truncated 4-byte at end", "abc\xf0\x9f\x98", false},
		{"only a lead byte", "\xf0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if utf8.ValidString(tt.in) != tt.want {
				t.Fatalf("bad test: utf8.ValidString(%q) != %v", tt.in, tt.want)
			}
			for _, pieces := range splits([]byte(tt.in)) {
				if got := validate(t, pieces); got != tt.want {
					t.Errorf("pieces %q: valid = %v, want %v", pieces, got, tt.want)
				}
			}
		})
	}
}

// TestValidatorEmptyPieces: empty writes in the middle of a split rune change
// nothing.
func TestValidatorEmptyPieces(t *testing.T) {
	t.Parallel()
	r := []byte("\U0001F600")
	pieces := [][]byte{nil, r[:1], {}, r[1:2], nil, r[2:3], {}, r[3:], nil}
	if !validate(t, pieces) {
		t.Error("a rune split by empty pieces was rejected")
	}
}

// FuzzValidator cuts data into pieces at fuzzed points and checks that the
// Validator agrees exactly with utf8.Valid of the whole, and that each Write
// answers exactly whether the bytes so far can still become valid.
func FuzzValidator(f *testing.F) {
	for _, s := range []string{
		"", "hello", "h\u00e9llo", "\u20ac", "\U0001F600", "\uFFFD", "\U0010FFFF",
		"\xc0\x80", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5", "\xff",
		"abc\xe2\x82", "\xf0\x9f\x98", "a\x80", "\xc3(",
	} {
		f.Add([]byte(s), []byte{1, 2, 3})
		f.Add([]byte(s), []byte{0})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var pieces [][]byte
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(int(cuts[i]%8), len(rest)) // 0-7: empty pieces too
			}
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		if got, want := validate(t, pieces), utf8.Valid(data); got != want {
			t.Fatalf("Validator = %v, utf8.Valid = %v for % x in pieces %s", got, want, data, fmt.Sprint(pieces))
		}
	})
}
