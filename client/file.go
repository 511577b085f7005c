package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The file convention of docs/protocol.md section 13: a file travels as ONE
// binary message (so two senders' files can never interleave):
//
//	"WSPF" · version byte 1 · 4-byte big-endian header length · JSON header ·
//	the file's bytes (exactly header.size) · 32-byte SHA-256 of them
//	(present when header.digest is "sha-256")
//
// A binary message that does not start with the magic is an anonymous blob.
const (
	FileMagic      = "WSPF"
	FileVersion    = 1
	MaxFileHeader  = 64 << 10
	DigestSHA256   = "sha-256"
	filePrefixSize = 4 + 1 + 4
)

// FileHeader describes a file message.
type FileHeader struct {
	Name   string `json:"name"`             // the sender's base name; sanitise before use
	Size   int64  `json:"size"`             // bytes of content
	Type   string `json:"type,omitempty"`   // media type, such as "image/png"
	Digest string `json:"digest,omitempty"` // "sha-256" if a digest trailer follows
	ID     string `json:"id,omitempty"`     // the sender's id for this transfer
	From   string `json:"from,omitempty"`   // the sender's member id (not verified by the proxy)
}

var (
	// ErrNotFile: a binary message without the file magic.
	ErrNotFile = errors.New("client: not a file message")
	// ErrFileCorrupt: a file message whose content does not match its
	// header (size) or its digest.
	ErrFileCorrupt = errors.New("client: file does not match its header or digest")
)

// WriteFile writes h, then exactly h.Size bytes of r, then their SHA-256, to
// w (a message writer). It sets h.Digest. A reader with fewer or more bytes
// than h.Size is an error (the message must then be abandoned).
func WriteFile(w io.Writer, h FileHeader, r io.Reader) (int64, error) {
	h.Digest = DigestSHA256
	hb, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	if len(hb) > MaxFileHeader {
		return 0, errors.New("client: file header too large (name too long?)")
	}
	prefix := make([]byte, filePrefixSize, filePrefixSize+len(hb))
	copy(prefix, FileMagic)
	prefix[4] = FileVersion
	binary.BigEndian.PutUint32(prefix[5:], uint32(len(hb)))
	if _, err := w.Write(append(prefix, hb...)); err != nil {
		return 0, err
	}
	sum := sha256.New()
	n, err := copyMessage(io.MultiWriter(w, sum), io.LimitReader(r, h.Size))
	if err != nil {
		return n, err
	}
	if n != h.Size {
		return n, fmt.Errorf("client: file shrank: %d of %d bytes", n, h.Size)
	}
	var extra [1]byte
	if k, _ := r.Read(extra[:]); k > 0 {
		return n, fmt.Errorf("client: file grew past its %d bytes", h.Size)
	}
	_, err = w.Write(sum.Sum(nil))
	return n, err
}

// FileReader reads a file message's content and verifies it at the end.
type FileReader struct {
	Header FileHeader

	r      io.Reader
	left   int64
	sum    hash.Hash
	err    error
	digest []byte
}

// ReadFile reads a file message's header from r (a Message) and returns a
// reader of its content. A message without the magic gives ErrNotFile
// wrapped in a *NotFileError holding the bytes already read.
func ReadFile(r io.Reader) (*FileReader, error) {
	prefix := make([]byte, filePrefixSize)
	n, err := io.ReadFull(r, prefix)
	if n < 4 || !bytes.Equal(prefix[:4], []byte(FileMagic)) {
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		return nil, &NotFileError{Prefix: prefix[:n]}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: truncated header", ErrFileCorrupt)
	}
	if prefix[4] != FileVersion {
		return nil, fmt.Errorf("client: file message version %d is not supported", prefix[4])
	}
	hl := binary.BigEndian.Uint32(prefix[5:])
	if hl > MaxFileHeader {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrFileCorrupt, hl)
	}
	hb := make([]byte, hl)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("%w: truncated header", ErrFileCorrupt)
	}
	fr := &FileReader{r: r, sum: sha256.New()}
	if err := json.Unmarshal(hb, &fr.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFileCorrupt, err)
	}
	if fr.Header.Size < 0 {
		return nil, fmt.Errorf("%w: negative size", ErrFileCorrupt)
	}
	if fr.Header.Digest != "" && fr.Header.Digest != DigestSHA256 {
		return nil, fmt.Errorf("client: file digest %q is not supported", fr.Header.Digest)
	}
	fr.left = fr.Header.Size
	return fr, nil
}

// Read reads the content. At its end it checks the rest of the message: the
// digest must match and nothing may follow; otherwise ErrFileCorrupt.
func (f *FileReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.left == 0 {
		f.err = f.finish()
		return 0, f.err
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.sum.Write(p[:n])
	f.left -= int64(n)
	if err == io.EOF {
		if f.left > 0 {
			f.err = fmt.Errorf("%w: %d bytes missing", ErrFileCorrupt, f.left)
			return n, f.err
		}
		err = nil
	}
	if err != nil {
		f.err = err
	}
	return n, err
}

func (f *FileReader) finish() error {
	var trailer [sha256.Size + 1]byte
	want := 0
	if f.Header.Digest == DigestSHA256 {
		want = sha256.Size
	}
	n, err := io.ReadFull(f.r, trailer[:want+1])
	if err != io.ErrUnexpectedEOF && err != io.EOF {
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: bytes after the content", ErrFileCorrupt)
	}
	if n != want {
		return fmt.Errorf("%w: digest missing", ErrFileCorrupt)
	}
	if want > 0 && !bytes.Equal(trailer[:want], f.sum.Sum(nil)) {
		return fmt.Errorf("%w: SHA-256 differs", ErrFileCorrupt)
	}
	return io.EOF
}

// Verified reports whether the content was checked against a digest.
func (f *FileReader) Verified() bool { return f.Header.Digest == DigestSHA256 }

// NotFileError is a binary message that is not a file message; Prefix is
// what was read of it (so a caller can still keep it whole).
type NotFileError struct{ Prefix []byte }

func (e *NotFileError) Error() string { return ErrNotFile.Error() }
func (e *NotFileError) Unwrap() error { return ErrNotFile }
