package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/utf8stream"
)

// pipe: stdin to the group, the group to stdout. It never reconnects: a
// stream cut in the middle cannot be resumed, and a script should see it.
func pipe(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("pipe", "[flags]", `Send stdin to the group and write what the group sends to stdout, byte for byte.
By default all of stdin is ONE message (binary), streamed whatever its size, and each message
received is written to stdout as it is, with nothing added. With --lines each line of stdin is
one message (text), and each message received is written followed by a newline.
Ending stdin does not end receiving: pipe runs until --count messages arrived, until
--exit-on-eof says so, until Ctrl-C, or until the connection ends. It never reconnects.`)
	text := fs.Bool("text", false, "send text messages (the default with --lines); stdin must be UTF-8")
	binary := fs.Bool("binary", false, "send binary messages (the default without --lines)")
	lines := fs.Bool("lines", false, "one message per line of stdin (the newline is not sent); a newline after each message received")
	count := fs.Int("count", 0, "exit after receiving this many messages (0: no limit)")
	exitOnEOF := fs.Bool("exit-on-eof", false, "exit once stdin is sent, without waiting to receive")
	receiveOnly := fs.Bool("receive-only", false, "send nothing; do not read stdin")
	if code := e.parse(fs, c, args); code >= 0 {
		return code
	}
	if *text && *binary {
		fmt.Fprintln(e.stderr, "wsproxy-cli: --text and --binary exclude each other")
		return exitUsage
	}
	typ := client.Binary
	if *text || (*lines && !*binary) {
		typ = client.Text
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

	sent := make(chan error, 1)
	if *receiveOnly {
		sent <- nil
	} else {
		go func() {
			if *lines {
				sent <- sendLines(ctx, conn, e.stdin, typ)
			} else {
				sent <- sendWhole(ctx, conn, e.stdin, typ)
			}
		}()
	}
	received := make(chan error, 1)
	go func() { received <- receiveToStdout(ctx, conn, e.stdout, *lines, *count) }()

	for {
		select {
		case err := <-sent:
			if err != nil {
				conn.Close()
				<-received
				return e.fail(err)
			}
			if *exitOnEOF {
				conn.Close()
				<-received
				return exitOK
			}
			sent = nil // keep receiving
		case err := <-received:
			if err == nil {
				return exitOK // --count reached
			}
			if ctx.Err() != nil {
				return exitOK
			}
			if sent != nil { // the sender may have closed the connection: its error says why
				t := time.NewTimer(200 * time.Millisecond)
				select {
				case serr := <-sent:
					if serr != nil {
						err = serr
					}
				case <-t.C:
				}
				t.Stop()
			}
			return e.fail(err)
		}
	}
}

// sendWhole sends all of r as one message.
func sendWhole(ctx context.Context, conn *client.Conn, r io.Reader, typ client.MessageType) error {
	if typ == client.Text {
		r = &utf8Reader{r: r}
	}
	_, err := conn.SendStream(ctx, typ, r)
	return err
}

// sendLines sends each line of r as one message, streamed: a line of any
// length passes through a 64 KiB buffer.
func sendLines(ctx context.Context, conn *client.Conn, r io.Reader, typ client.MessageType) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		if _, err := br.Peek(1); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		w, err := conn.Writer(ctx, typ)
		if err != nil {
			return err
		}
		var v utf8stream.Validator
		for {
			chunk, rerr := br.ReadSlice('\n')
			end := rerr != bufio.ErrBufferFull
			if end && len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
				chunk = chunk[:len(chunk)-1]
			}
			if typ == client.Text && (!v.Write(chunk) || (end && !v.Close())) {
				_ = conn.CloseWith(1000, "")
				return fmt.Errorf("line %d of stdin is not valid UTF-8: send it with --binary", n)
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			if rerr != nil && rerr != bufio.ErrBufferFull && rerr != io.EOF {
				_ = conn.CloseWith(1000, "")
				return fmt.Errorf("reading stdin: %w", rerr)
			}
			if end {
				break
			}
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
}

// utf8Reader fails at the first byte that makes its stream invalid UTF-8.
type utf8Reader struct {
	r io.Reader
	v utf8stream.Validator
}

var errNotUTF8 = errors.New("stdin is not valid UTF-8: send it with --binary")

func (u *utf8Reader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if !u.v.Write(p[:n]) || (err == io.EOF && !u.v.Close()) {
		return 0, errNotUTF8
	}
	return n, err
}

// receiveToStdout writes each message to w as it arrives; nil once count
// messages have arrived.
func receiveToStdout(ctx context.Context, conn *client.Conn, w io.Writer, lines bool, count int) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	for n := 0; count == 0 || n < count; n++ {
		m, err := conn.Next(ctx)
		if err != nil {
			bw.Flush()
			return err
		}
		if _, err := io.Copy(bw, m); err != nil {
			bw.Flush()
			return err
		}
		if lines {
			bw.WriteByte('\n')
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("writing stdout: %w", err)
		}
	}
	return nil
}
