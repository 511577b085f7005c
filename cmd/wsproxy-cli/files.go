package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"

	"github.com/wsproxy/wsproxy/client"
)

// send: each file one message of the file convention (docs/protocol.md
// section 13). No reconnect: a file cut short is not sent again behind the
// user's back.
func send(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("send", "[flags] FILE...", `Send each FILE to the members of the group connected now, as one binary message carrying
its name, size, media type and SHA-256 (docs/protocol.md section 13), streamed whatever its
size. Start "wsproxy-cli receive" (or open the page) on the other side first: the proxy
delivers a message only to members connected when it starts. Never reconnects.`)
	progress := fs.String("progress", "auto", "progress bars on stderr: auto (when stderr is a terminal), always or never")
	typ := fs.String("type", "", "media type to announce (default: from the name, else from the content)")
	if code := e.parse(fs, c, args); code >= 0 {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(e.stderr, "wsproxy-cli: send needs at least one FILE")
		return exitUsage
	}
	show, err := e.progressFlag(*progress)
	if err != nil {
		fmt.Fprintln(e.stderr, "wsproxy-cli:", err)
		return exitUsage
	}
	for _, path := range fs.Args() { // fail before connecting
		if st, err := os.Stat(path); err != nil {
			return e.fail(err)
		} else if !st.Mode().IsRegular() {
			return e.fail(fmt.Errorf("%s is not a regular file", path))
		}
	}
	cfg, err := c.config(e)
	if err != nil {
		return e.fail(err)
	}
	conn, err := client.Dial(ctx, cfg)
	if err != nil {
		return e.fail(err)
	}
	defer conn.Close()
	go func() { // read, so that pings are answered; replies are not awaited
		for {
			if _, err := conn.Next(context.Background()); err != nil {
				return
			}
		}
	}()
	for _, path := range fs.Args() {
		if err := sendFile(ctx, e, conn, c.id, path, *typ, show); err != nil {
			return e.fail(err)
		}
	}
	return exitOK
}

func sendFile(ctx context.Context, e *env, conn *client.Conn, from, path, typ string, show bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	name := filepath.Base(path)
	if typ == "" {
		typ = mediaType(f, name)
	}
	h := client.FileHeader{Name: name, Size: st.Size(), Type: typ, ID: client.NewID(), From: from}
	w, err := conn.Writer(ctx, client.Binary)
	if err != nil {
		return err
	}
	bar := e.bar(show, st.Size(), "sending "+name)
	start := time.Now()
	_, err = client.WriteFile(w, h, io.TeeReader(f, bar))
	if err != nil {
		w.Close()
		conn.Close()
		return fmt.Errorf("sending %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("sending %s: %w", path, err)
	}
	_ = bar.Finish()
	fmt.Fprintf(e.stderr, "sent %s (%s, %s) in %.1f s\n", name, formatBytes(st.Size()), typ, time.Since(start).Seconds())
	return nil
}

// mediaType guesses from the name, then from the first bytes.
func mediaType(f *os.File, name string) string {
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" {
		return t
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	_, _ = f.Seek(0, io.SeekStart)
	return http.DetectContentType(head[:n])
}

// receive: save each file message to --dir, through a temporary name,
// verified, then renamed.
func receive(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("receive", "--dir DIR [flags]", `Save the files sent to the group (by "wsproxy-cli send" or the page) into DIR. Each is written
to a temporary name in DIR as it arrives (never held in memory), checked against its size and
SHA-256, then renamed to its own name ("name (1).ext" if that exists, unless --overwrite). A name
with a path in it ("../x", "/etc/x", "a/b") is refused, as are hidden names and control
characters. Binary messages that are not files, and text, are reported and skipped.
Reconnects by the shared policy (docs/protocol.md, Reconnecting) unless --reconnect=never.`)
	dir := fs.String("dir", ".", "the directory to save files in")
	count := fs.Int("count", 0, "exit after this many files (0: run until Ctrl-C)")
	overwrite := fs.Bool("overwrite", false, "replace a file of the same name")
	maxSize := fs.Int64("max-size", 0, "refuse files larger than this many bytes (0: no limit)")
	progress := fs.String("progress", "auto", "progress bars on stderr: auto (when stderr is a terminal), always or never")
	reconnect := fs.String("reconnect", "auto", "auto (the shared policy) or never")
	if code := e.parse(fs, c, args); code >= 0 {
		return code
	}
	show, err := e.progressFlag(*progress)
	if err != nil {
		fmt.Fprintln(e.stderr, "wsproxy-cli:", err)
		return exitUsage
	}
	policy, err := policyFlag(*reconnect)
	if err != nil {
		fmt.Fprintln(e.stderr, "wsproxy-cli:", err)
		return exitUsage
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		return e.fail(fmt.Errorf("--dir %s is not a directory", *dir))
	}
	cfg, err := c.config(e)
	if err != nil {
		return e.fail(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	saved, bad := 0, 0
	cl := client.New(client.ClientConfig{
		Config: cfg,
		Policy: policy,
		OnConnect: func(context.Context) {
			fmt.Fprintf(e.stderr, "waiting for files in %q as %s; saving to %s\n", c.group, c.id, *dir)
		},
		OnDisconnect: func(_ context.Context, r client.Retry, delay time.Duration, again bool) {
			fmt.Fprintln(e.stderr, describeEnd(r, delay, again))
		},
		OnError: func(_ context.Context, err error) { fmt.Fprintln(e.stderr, "wsproxy-cli:", err) },
	})
	cl.OnBinary(func(ctx context.Context, m *client.Message) error {
		path, err := saveFile(ctx, e, m, *dir, *overwrite, *maxSize, show)
		if err != nil {
			bad++
			fmt.Fprintln(e.stderr, "wsproxy-cli: not saved:", err)
		} else if path != "" {
			saved++
			fmt.Fprintln(e.stdout, path)
		}
		if *count > 0 && saved+bad >= *count {
			cl.Close()
		}
		return nil
	})
	cl.OnText(func(context.Context, string) error { return nil })
	err = cl.Run(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		return e.fail(err)
	case bad > 0:
		return exitBadFile
	}
	return exitOK
}

// saveFile saves one message; "" and nil for a message that is not a file.
func saveFile(ctx context.Context, e *env, m *client.Message, dir string, overwrite bool, maxSize int64, show bool) (string, error) {
	fr, err := client.ReadFile(m)
	var nf *client.NotFileError
	if errors.As(err, &nf) {
		n, _ := io.Copy(io.Discard, m)
		fmt.Fprintf(e.stderr, "skipped a binary message of %s that is not a file\n", formatBytes(int64(len(nf.Prefix))+n))
		return "", nil
	}
	if err != nil {
		return "", err
	}
	h := fr.Header
	name, err := safeName(h.Name)
	if err != nil {
		return "", fmt.Errorf("file from %s: %w", orUnknown(h.From), err)
	}
	if maxSize > 0 && h.Size > maxSize {
		return "", fmt.Errorf("%s from %s: %s is over --max-size", name, orUnknown(h.From), formatBytes(h.Size))
	}
	tmp, err := os.CreateTemp(dir, "."+name+".*.part")
	if err != nil {
		return "", err
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bar := e.bar(show, h.Size, "receiving "+name)
	start := time.Now()
	if _, err := io.CopyBuffer(io.MultiWriter(tmp, bar), fr, make([]byte, 64<<10)); err != nil {
		return "", fmt.Errorf("%s from %s: %w", name, orUnknown(h.From), err)
	}
	_ = bar.Finish()
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	final, err := place(tmp.Name(), dir, name, overwrite)
	if err != nil {
		return "", err
	}
	keep = true
	check := "SHA-256 verified"
	if !fr.Verified() {
		check = "no digest sent: size checked only"
	}
	fmt.Fprintf(e.stderr, "received %s (%s, %s) from %s in %.1f s: %s\n", name, formatBytes(h.Size),
		clean(or(h.Type, "unknown type")), orUnknown(h.From), time.Since(start).Seconds(), check)
	return final, nil
}

// place moves tmp to dir/name, or "name (1).ext" and so on if that exists.
func place(tmp, dir, name string, overwrite bool) (string, error) {
	if overwrite {
		p := filepath.Join(dir, name)
		return p, os.Rename(tmp, p)
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < 1000; i++ {
		p := filepath.Join(dir, name)
		if i > 0 {
			p = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, i, ext))
		}
		err := os.Link(tmp, p) // fails if p exists: no race with another writer
		if err == nil {
			return p, os.Remove(tmp)
		}
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if _, serr := os.Lstat(p); errors.Is(serr, os.ErrNotExist) {
			return p, os.Rename(tmp, p) // a file system without hard links
		}
	}
	return "", fmt.Errorf("%s: too many files of that name", name)
}

// safeName accepts a sender's file name only if it is one plain name:
// nothing that could leave the directory or hide in it.
func safeName(name string) (string, error) {
	refuse := func(why string) (string, error) {
		return "", fmt.Errorf("refused the file name %q: %s", clean(name), why)
	}
	switch {
	case name == "", name == ".", name == "..":
		return refuse("not a file name")
	case strings.ContainsAny(name, `/\`):
		return refuse("it has a path in it")
	case strings.HasPrefix(name, "."):
		return refuse("hidden names are not accepted")
	case !utf8.ValidString(name):
		return refuse("not UTF-8")
	case len(name) > 255:
		return refuse("longer than 255 bytes")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return refuse("control characters")
	case strings.ContainsRune(name, ':') && filepath.VolumeName(name) != "":
		return refuse("a volume name")
	case !filepath.IsLocal(name):
		return refuse("not a local name")
	}
	return name, nil
}

func (e *env) progressFlag(s string) (bool, error) {
	switch s {
	case "auto":
		return e.stderrTTY, nil
	case "always":
		return true, nil
	case "never":
		return false, nil
	}
	return false, fmt.Errorf("--progress must be auto, always or never, not %q", s)
}

// bar is a byte progress bar on stderr, or one that shows nothing.
func (e *env) bar(show bool, size int64, desc string) *progressbar.ProgressBar {
	if !show {
		return progressbar.DefaultBytesSilent(size, desc)
	}
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.stderr) }),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
	)
}
