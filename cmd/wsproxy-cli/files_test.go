package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

func writeTemp(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// send and receive: files keep their names and bytes, a second file of the
// same name does not overwrite the first, both sides show progress bars,
// and nothing temporary is left (the old CLI could not save a file).
func TestSendReceive(t *testing.T) {
	p := proxytest.Start(t)
	src, dst := t.TempDir(), t.TempDir()
	a := make([]byte, 5<<20+3)
	_, _ = rand.Read(a)
	pa := writeTemp(t, src, "photo.png", a)
	pb := writeTemp(t, src, "notes.txt", []byte("hello\n"))
	rx := start(t, p, nil, nil, "receive", "--group", "files", "--id", "rx", "--dir", dst, "--count", "3", "--progress", "always")
	p.WaitMember(t, "files", "rx")
	tx := start(t, p, nil, nil, "send", "--group", "files", "--id", "tx", "--progress", "always", pa, pb, pb)
	if code := tx.wait(t); code != 0 {
		t.Fatalf("send: %d %s", code, tx.stderr.String())
	}
	if code := rx.wait(t); code != 0 {
		t.Fatalf("receive: %d %s", code, rx.stderr.String())
	}
	got, _ := os.ReadFile(filepath.Join(dst, "photo.png"))
	if !bytes.Equal(got, a) {
		t.Fatalf("photo.png: %d bytes, different", len(got))
	}
	for _, n := range []string{"notes.txt", "notes (1).txt"} {
		if b, _ := os.ReadFile(filepath.Join(dst, n)); string(b) != "hello\n" {
			t.Fatalf("%s: %q", n, b)
		}
	}
	if names := listDir(t, dst); len(names) != 3 {
		t.Fatalf("dir holds %v", names)
	}
	for name, pr := range map[string]*proc{"send": tx, "receive": rx} {
		if e := pr.stderr.String(); !strings.Contains(e, "100% |") || !strings.Contains(e, "photo.png") {
			t.Errorf("%s shows no progress bar:\n%s", name, e)
		}
	}
	if e := rx.stderr.String(); !strings.Contains(e, "image/png") || !strings.Contains(e, "from tx") || !strings.Contains(e, "SHA-256 verified") {
		t.Errorf("receive did not say what it got:\n%s", e)
	}
	if !strings.Contains(rx.stdout.String(), filepath.Join(dst, "photo.png")) {
		t.Errorf("receive did not print the path: %q", rx.stdout.String())
	}
}

// sendRaw sends a file message with header h and content b (and a digest
// that matches b unless corrupt).
func sendRaw(t *testing.T, c *client.Conn, h client.FileHeader, b []byte, corrupt bool) {
	t.Helper()
	var msg bytes.Buffer
	if _, err := client.WriteFile(&msg, h, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	wire := msg.Bytes()
	if corrupt {
		wire[len(wire)-1] ^= 1
	}
	if err := c.Send(ctxBG(t), client.Binary, wire); err != nil {
		t.Fatal(err)
	}
}

// A name that leaves the directory is refused; nothing is written outside
// it (or inside it).
func TestReceiveRefusesPathTraversal(t *testing.T) {
	p := proxytest.Start(t)
	root := t.TempDir()
	dst := filepath.Join(root, "in")
	_ = os.Mkdir(dst, 0o755)
	names := []string{"../evil.txt", "/tmp/evil.txt", `..\evil.txt`, "a/../../evil.txt", ".bashrc", "..", "bad\x1b[2Jname"}
	rx := start(t, p, nil, nil, "receive", "--group", "trav", "--id", "rx", "--dir", dst, "--count", strconv.Itoa(len(names)))
	p.WaitMember(t, "trav", "rx")
	tx := dialRaw(t, p, "tx", "trav")
	for _, n := range names {
		sendRaw(t, tx, client.FileHeader{Name: n, Size: 4}, []byte("evil"), false)
	}
	if code := rx.wait(t); code != exitBadFile {
		t.Fatalf("exit %d: %s", code, rx.stderr.String())
	}
	if e := rx.stderr.String(); strings.Count(e, "refused the file name") != len(names) || strings.Contains(e, "\x1b") {
		t.Fatalf("stderr:\n%q", e)
	}
	if got := listDir(t, root); len(got) != 1 {
		t.Fatalf("root holds %v", got)
	}
	if got := listDir(t, dst); len(got) != 0 {
		t.Fatalf("dir holds %v", got)
	}
}

// A file whose bytes do not match its digest is not kept, not even under
// its temporary name.
func TestReceiveRefusesCorruptFile(t *testing.T) {
	p := proxytest.Start(t)
	dst := t.TempDir()
	rx := start(t, p, nil, nil, "receive", "--group", "bad", "--id", "rx", "--dir", dst, "--count", "2")
	p.WaitMember(t, "bad", "rx")
	tx := dialRaw(t, p, "tx", "bad")
	sendRaw(t, tx, client.FileHeader{Name: "a.bin", Size: 5}, []byte("12345"), true)
	sendRaw(t, tx, client.FileHeader{Name: "b.bin", Size: 5}, []byte("12345"), false)
	if code := rx.wait(t); code != exitBadFile {
		t.Fatalf("exit %d: %s", code, rx.stderr.String())
	}
	if got := listDir(t, dst); len(got) != 1 || got[0] != "b.bin" {
		t.Fatalf("dir holds %v", got)
	}
	if !strings.Contains(rx.stderr.String(), "SHA-256 differs") {
		t.Fatalf("stderr: %s", rx.stderr.String())
	}
}
