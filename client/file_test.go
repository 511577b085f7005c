package client_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/client"
)

func TestFileRoundTrip(t *testing.T) {
	content := []byte("hello\x00\xff world")
	var msg bytes.Buffer
	h := client.FileHeader{Name: "a.bin", Size: int64(len(content)), Type: "application/octet-stream", From: "alice"}
	if _, err := client.WriteFile(&msg, h, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	wire := msg.Bytes()
	if string(wire[:4]) != "WSPF" || wire[4] != 1 {
		t.Fatalf("prefix %q", wire[:5])
	}
	fr, err := client.ReadFile(bytes.NewReader(wire))
	if err != nil {
		t.Fatal(err)
	}
	if fr.Header.Name != "a.bin" || fr.Header.Size != int64(len(content)) || fr.Header.Digest != "sha-256" || !fr.Verified() {
		t.Fatalf("header %+v", fr.Header)
	}
	got, err := io.ReadAll(fr)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("got %q %v", got, err)
	}

	// One flipped content byte, a short message, or trailing bytes are caught.
	for name, bad := range map[string][]byte{
		"flipped":  flip(wire, len(wire)-33),
		"short":    wire[:len(wire)-5],
		"trailing": append(append([]byte{}, wire...), 'x'),
	} {
		fr, err := client.ReadFile(bytes.NewReader(bad))
		if err == nil {
			_, err = io.ReadAll(fr)
		}
		if !errors.Is(err, client.ErrFileCorrupt) {
			t.Errorf("%s: %v, want ErrFileCorrupt", name, err)
		}
	}

	// A plain binary message is not a file, and its first bytes are kept.
	_, err = client.ReadFile(strings.NewReader("PNG..."))
	var nf *client.NotFileError
	if !errors.As(err, &nf) || string(nf.Prefix) != "PNG..." {
		t.Fatalf("not a file: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 1
	return c
}

// A reader that yields fewer or more bytes than the header says is refused
// by the writer.
func TestWriteFileSizeMismatch(t *testing.T) {
	if _, err := client.WriteFile(io.Discard, client.FileHeader{Name: "x", Size: 5}, strings.NewReader("abc")); err == nil {
		t.Fatal("short reader accepted")
	}
	if _, err := client.WriteFile(io.Discard, client.FileHeader{Name: "x", Size: 2}, strings.NewReader("abc")); err == nil {
		t.Fatal("long reader accepted")
	}
}
