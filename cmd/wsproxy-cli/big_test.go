package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A 1 GiB file through send and receive, each a real process (no race
// detector) through a real proxy process: the bytes arrive exact, and each
// side's peak RSS (getrusage ru_maxrss, the kernel's VmHWM at exit) stays
// under 64 MiB (the old CLI held 1.25 GB to receive 500 MiB).
// WSPROXY_CLI_BIG_BYTES sets another size.
func TestSendReceive1GiBInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	size := int64(1 << 30)
	if s := os.Getenv("WSPROXY_CLI_BIG_BYTES"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	}
	const limit = 64 << 20
	cli := buildCLI(t)
	url := startProxyProcess(t)

	src, dst := t.TempDir(), t.TempDir()
	path := filepath.Join(src, "big.bin")
	want := writeRandomFile(t, path, size)

	env := append(os.Environ(), "WSPROXY_URL="+url, "WSPROXY_GROUP=big")
	rx := exec.Command(cli, "receive", "--id", "rx", "--dir", dst, "--count", "1", "--progress", "never")
	rx.Env = env
	rxErr := &syncBuffer{}
	rx.Stderr = rxErr
	rxOut, _ := rx.StdoutPipe()
	if err := rx.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rx.Process.Kill(); _ = rx.Wait() })
	waitFor(t, "the receiver to connect", func() bool { return strings.Contains(rxErr.String(), "waiting for files") })

	tx := exec.Command(cli, "send", "--id", "tx", "--progress", "never", path)
	tx.Env = env
	start := time.Now()
	out, err := tx.CombinedOutput()
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	sendTime := time.Since(start)
	saved, _ := io.ReadAll(rxOut)
	if err := rx.Wait(); err != nil {
		t.Fatalf("receive: %v\n%s", err, rxErr.String())
	}
	recvTime := time.Since(start)
	if strings.TrimSpace(string(saved)) != filepath.Join(dst, "big.bin") {
		t.Fatalf("receive printed %q", saved)
	}
	if got := sha256File(t, filepath.Join(dst, "big.bin")); got != want {
		t.Fatal("the received file differs")
	}
	txRSS := tx.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	rxRSS := rx.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	t.Logf("%d MiB: send peak RSS %.1f MiB, %.1f s; receive peak RSS %.1f MiB, %.1f s (from the send's start)",
		size>>20, float64(txRSS)/(1<<20), sendTime.Seconds(), float64(rxRSS)/(1<<20), recvTime.Seconds())
	if txRSS > limit || rxRSS > limit {
		t.Fatalf("peak RSS over 64 MiB: send %d, receive %d", txRSS, rxRSS)
	}
}

func writeRandomFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, r, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// startProxyProcess builds and runs the proxy (no race detector) on a free
// loopback port until the test ends, and returns its /ws URL.
func startProxyProcess(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "proxy")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build proxy: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"}, args...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l struct{ Message, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "proxy listening" {
				addr <- l.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		return "ws://" + a + "/ws"
	case <-time.After(30 * time.Second):
		t.Fatal("the proxy did not start")
		return ""
	}
}
