package main

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"strconv"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// Every message starts with a one-line ASCII header (valid UTF-8, so text
// messages can carry it too), then its body:
//
//	SOAK1 g=003 c=00000042 s=00000007 t=b n=00065470 h=1a2b3c4d id=m3\n<body>
//
// g is the sender's group index, c its connection number, s the message's
// sequence number on that connection (from 1), t its type (t or b), n the
// body's length and h the body's CRC-32C. The numeric fields have a fixed
// width, so a connection's header length does not depend on the values.
const magic = "SOAK1"

// maxHeader bounds a header line; a message whose first maxHeader bytes hold
// no newline is corrupt.
const maxHeader = 256

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type header struct {
	group int
	conn  int64
	seq   int64
	typ   websocket.MessageType
	n     int64
	crc   uint32
	id    string
}

func (h header) append(dst []byte) []byte {
	t := 'b'
	if h.typ == websocket.MessageText {
		t = 't'
	}
	return fmt.Appendf(dst, "%s g=%03d c=%08d s=%08d t=%c n=%08d h=%08x id=%s\n",
		magic, h.group, h.conn, h.seq, t, h.n, h.crc, h.id)
}

// parseHeader parses a header line without its newline.
func parseHeader(line []byte) (header, error) {
	f := bytes.Fields(line)
	if len(f) != 8 || string(f[0]) != magic {
		return header{}, errors.New("not a soak header")
	}
	var h header
	want := []string{"g", "c", "s", "t", "n", "h", "id"}
	for i, kv := range f[1:] {
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || string(k) != want[i] || len(v) == 0 {
			return header{}, fmt.Errorf("bad field %q", kv)
		}
		var err error
		switch want[i] {
		case "g":
			var g int64
			g, err = strconv.ParseInt(string(v), 10, 32)
			h.group = int(g)
		case "c":
			h.conn, err = strconv.ParseInt(string(v), 10, 64)
		case "s":
			h.seq, err = strconv.ParseInt(string(v), 10, 64)
		case "t":
			switch string(v) {
			case "t":
				h.typ = websocket.MessageText
			case "b":
				h.typ = websocket.MessageBinary
			default:
				err = errors.New("bad type")
			}
		case "n":
			h.n, err = strconv.ParseInt(string(v), 10, 64)
		case "h":
			var c uint64
			c, err = strconv.ParseUint(string(v), 16, 32)
			h.crc = uint32(c)
		case "id":
			h.id = string(v)
		}
		if err != nil {
			return header{}, fmt.Errorf("field %q: %w", kv, err)
		}
	}
	return h, nil
}

// pools hold random bodies: messages are slices of them, so sending costs
// no allocation and no random generation per message. Read-only once built.
type pools struct {
	bin  []byte
	text []byte // valid UTF-8 with 1- to 4-byte runes
}

func newPools(rng *rand.Rand, size int64) *pools {
	p := &pools{bin: make([]byte, size)}
	for i := range p.bin {
		p.bin[i] = byte(rng.Uint32())
	}
	runes := []rune("aeiouAEIOU0123456789 .,;-_/\n\téüßçø€日本語文字😀🚀𝄞")
	text := make([]byte, 0, size+8)
	for int64(len(text)) < size {
		if rng.IntN(4) > 0 {
			text = append(text, byte('a'+rng.IntN(26)))
			continue
		}
		text = utf8.AppendRune(text, runes[rng.IntN(len(runes))])
	}
	p.text = text
	return p
}

// body returns about n bytes of the pool for typ (a text body may be up to 3
// bytes shorter, to end on a rune boundary).
func (p *pools) body(rng *rand.Rand, typ websocket.MessageType, n int64) []byte {
	if n <= 0 {
		return nil
	}
	pool := p.bin
	if typ == websocket.MessageText {
		pool = p.text
	}
	n = min(n, int64(len(pool))-8)
	o := rng.Int64N(int64(len(pool)) - n + 1)
	if typ == websocket.MessageBinary {
		return pool[o : o+n]
	}
	for o < int64(len(pool)) && !utf8.RuneStart(pool[o]) {
		o++
	}
	end := min(o+n, int64(len(pool)))
	for end > o && end < int64(len(pool)) && !utf8.RuneStart(pool[end]) {
		end--
	}
	return pool[o:end]
}

// messageSize draws a whole message's length (header included): mostly
// small, some around the proxy's buffer size (where a message switches from
// buffered to streamed), a few up to max.
func messageSize(rng *rand.Rand, buffer, maxLen int64) int64 {
	var n int64
	switch x := rng.Float64(); {
	case x < 0.20:
		n = rng.Int64N(65) // header only: an empty body
	case x < 0.45:
		n = 64 + rng.Int64N(2048-64)
	case x < 0.75:
		n = 2048 + rng.Int64N(max(1, buffer-4096-2048))
	case x < 0.78:
		n = buffer - 1 + rng.Int64N(3) // buffer-1, buffer, buffer+1
	case x < 0.90:
		n = buffer - 4096 + rng.Int64N(8193)
	default:
		lo, hi := math.Log(128<<10), math.Log(float64(maxLen))
		n = int64(math.Exp(lo + rng.Float64()*(hi-lo)))
	}
	return max(0, min(n, maxLen))
}
