package cluster

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// What travels on the bus. Every data subject message (a chunk) starts with
// a fixed header, then, on a message's first chunk only, the sender's and
// the target's ids, then payload bytes:
//
//	0     version (1)
//	1     kind: kindData, kindAbort or kindSync
//	2     flags: flagFirst, flagLast, flagText
//	3     reserved
//	4:12  origin epoch
//	12:20 seq: +1 for every chunk the origin sends to this group
//	20:28 off: payload bytes the origin sent to this group before this chunk
//	28:29 length of the sender's id (first chunk only)
//	29:30 length of the target id (first chunk only)
//	30:32 reserved
//
// A sync carries nothing: the origin lost chunks of this group (its
// publishes failed while it was cut off), and its seq makes the loss show as
// a gap at every receiver.
//
// A batch is one bus message holding several small chunks of one group, in
// order: the byte batchVersion, then for each chunk its length (4 bytes,
// big-endian) and the chunk as above.
const (
	wireVersion  = 1
	batchVersion = 2
	headerLen    = 32

	kindData  = 1
	kindAbort = 2
	kindSync  = 3

	flagFirst = 1
	flagLast  = 2
	flagText  = 4
	// flagOrdered, on a stream's first chunk: the origin holds the group's
	// stream order until every node with members acks the placement.
	flagOrdered = 8
)

type header struct {
	kind, flags byte
	epoch       uint64
	seq         uint64
	off         int64
	from, to    string // first chunk only
}

var errBadHeader = errors.New("malformed bus message")

// appendHeader appends h to b.
func appendHeader(b []byte, h *header) []byte {
	var fixed [headerLen]byte
	fixed[0] = wireVersion
	fixed[1] = h.kind
	fixed[2] = h.flags
	binary.BigEndian.PutUint64(fixed[4:], h.epoch)
	binary.BigEndian.PutUint64(fixed[12:], h.seq)
	binary.BigEndian.PutUint64(fixed[20:], uint64(h.off))
	fixed[28] = byte(len(h.from))
	fixed[29] = byte(len(h.to))
	b = append(b, fixed[:]...)
	b = append(b, h.from...)
	return append(b, h.to...)
}

// parseHeader reads the header at the front of msg and returns the payload
// after it.
func parseHeader(msg []byte, h *header) ([]byte, error) {
	if len(msg) < headerLen || msg[0] != wireVersion {
		return nil, errBadHeader
	}
	h.kind, h.flags = msg[1], msg[2]
	h.epoch = binary.BigEndian.Uint64(msg[4:])
	h.seq = binary.BigEndian.Uint64(msg[12:])
	h.off = int64(binary.BigEndian.Uint64(msg[20:]))
	nf, nt := int(msg[28]), int(msg[29])
	rest := msg[headerLen:]
	if len(rest) < nf+nt {
		return nil, errBadHeader
	}
	h.from, h.to = "", ""
	if nf > 0 {
		h.from = string(rest[:nf])
	}
	if nt > 0 {
		h.to = string(rest[nf : nf+nt])
	}
	return rest[nf+nt:], nil
}

// Node subject messages: small, binary.
//
//	credit: kind, epoch of the reporting node (8), consumed offset (8), group (base64url)
//	cut:    kind, epoch of the origin (8), group
//	placed: kind, epoch of the placing node (8), the stream's first seq (8), group
//	fenced: kind
const (
	nodeCredit = 1
	nodeCut    = 2
	nodeFenced = 3
	nodePlaced = 4
)

func appendCredit(b []byte, epoch uint64, consumed int64, g64 string) []byte {
	b = append(b, nodeCredit)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(consumed))
	return append(b, g64...)
}

func appendPlaced(b []byte, epoch, seq uint64, g64 string) []byte {
	b = append(b, nodePlaced)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, g64...)
}

func appendCut(b []byte, epoch uint64, g64 string) []byte {
	b = append(b, nodeCut)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = binary.BigEndian.AppendUint64(b, 0)
	return append(b, g64...)
}

// parseNodeMsg reads a credit or a cut.
func parseNodeMsg(msg []byte) (kind byte, epoch uint64, n int64, g64 string, err error) {
	if len(msg) == 1 && msg[0] == nodeFenced {
		return nodeFenced, 0, 0, "", nil
	}
	if len(msg) < 17 {
		return 0, 0, 0, "", errBadHeader
	}
	return msg[0], binary.BigEndian.Uint64(msg[1:]), int64(binary.BigEndian.Uint64(msg[9:])), string(msg[17:]), nil
}

// enc is how group names and ids appear in subjects and keys: base64url
// without padding, which has no '.', '*', '>' or space.
var enc = base64.RawURLEncoding

func encodeName(s string) string { return enc.EncodeToString([]byte(s)) }

func decodeName(s string) (string, bool) {
	b, err := enc.DecodeString(s)
	return string(b), err == nil
}
