package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wsproxy/wsproxy/client"
)

// chatType is the envelope type of a chat line (docs/protocol.md section
// 13); its data is the line, a JSON string.
const chatType = "chat"

func chat(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("chat", "[flags]", `Chat with the group: each line you type is sent; what others send is printed,
one line each, with the time and, when the message says so, who sent it.
Lines are sent as {"type":"chat","from":ID,"data":LINE} envelopes (the page shows them as chat
too), or as plain text with --plain. Ctrl-D on a terminal, /quit or Ctrl-C leaves. When stdin is
not a terminal, its end stops sending only, unless --exit-on-eof. Reconnects by the shared policy
(docs/protocol.md, Reconnecting) unless --reconnect=never. Who is in the group, and who joins and
leaves, is printed as "* ..." lines (from a presence watcher beside the connection) unless
--presence=false.`)
	plain := fs.Bool("plain", false, "send each line as plain text, not as a chat envelope")
	exitOnEOF := fs.Bool("exit-on-eof", false, "leave when stdin ends (the default on a terminal)")
	reconnect := fs.String("reconnect", "auto", "auto (the shared policy) or never")
	presence := fs.Bool("presence", true, "print who is in the group and who joins and leaves")
	if code := e.parse(fs, c, args); code >= 0 {
		return code
	}
	cfg, err := c.config(e)
	if err != nil {
		return e.fail(err)
	}
	policy, err := policyFlag(*reconnect)
	if err != nil {
		fmt.Fprintln(e.stderr, "wsproxy-cli:", err)
		return exitUsage
	}
	out := &lockedWriter{w: e.stdout}
	cl := client.New(client.ClientConfig{
		Config: cfg,
		Policy: policy,
		OnConnect: func(context.Context) {
			fmt.Fprintf(e.stderr, "connected to %q as %s\n", c.group, c.id)
		},
		OnDisconnect: func(_ context.Context, r client.Retry, delay time.Duration, again bool) {
			fmt.Fprintln(e.stderr, describeEnd(r, delay, again))
		},
		OnError: func(_ context.Context, err error) { fmt.Fprintln(e.stderr, "wsproxy-cli:", err) },
	})
	client.On(cl, chatType, func(_ context.Context, line string, m *client.Meta) error {
		out.printf("%s %s: %s\n", stamp(), orUnknown(m.From), clean(line))
		return nil
	})
	cl.OnText(func(_ context.Context, s string) error {
		if env, err := client.ParseEnvelope([]byte(s)); err == nil {
			out.printf("%s %s [%s]: %s\n", stamp(), orUnknown(env.From), clean(env.Type), clean(string(env.Data)))
			return nil
		}
		out.printf("%s %s\n", stamp(), clean(s))
		return nil
	})
	cl.OnBinary(func(_ context.Context, m *client.Message) error {
		fr, err := client.ReadFile(m)
		var nf *client.NotFileError
		switch {
		case errors.As(err, &nf):
			n, _ := io.Copy(io.Discard, m)
			out.printf("%s [binary message, %s]\n", stamp(), formatBytes(int64(len(nf.Prefix))+n))
		case err != nil:
			out.printf("%s [binary message: %v]\n", stamp(), err)
		default:
			out.printf("%s %s: [file %s, %s, %s] (use \"wsproxy-cli receive\" to save files)\n", stamp(),
				orUnknown(fr.Header.From), clean(fr.Header.Name), formatBytes(fr.Header.Size), clean(or(fr.Header.Type, "unknown type")))
		}
		return nil
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- cl.Run(ctx) }()
	presenceDone := make(chan struct{})
	if *presence {
		go func() {
			defer close(presenceDone)
			chatPresence(ctx, e, cfg, policy, c.id, out)
		}()
	} else {
		close(presenceDone)
	}
	defer func() { cancel(); <-presenceDone }()

	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(e.stdin)
		for {
			line, err := br.ReadString('\n') // any length
			if line != "" {
				select {
				case lines <- strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"):
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	leaveOnEOF := *exitOnEOF || e.stdinTTY
	for {
		select {
		case err := <-runErr:
			if ctx.Err() != nil {
				return exitOK
			}
			return e.fail(err)
		case line, ok := <-lines:
			if !ok {
				lines = nil
				if leaveOnEOF {
					cl.Close()
					<-runErr
					return exitOK
				}
				continue
			}
			if line == "/quit" {
				cl.Close()
				<-runErr
				return exitOK
			}
			if !utf8.ValidString(line) {
				fmt.Fprintln(e.stderr, "wsproxy-cli: not sent: the line is not valid UTF-8")
				continue
			}
			var err error
			if *plain {
				err = cl.Send(ctx, client.Text, []byte(line))
			} else {
				err = cl.SendJSON(ctx, chatType, line)
			}
			if err != nil && ctx.Err() == nil {
				fmt.Fprintln(e.stderr, "wsproxy-cli: not sent:", err)
			}
		}
	}
}

// chatPresence prints presence lines ("* bob joined") until ctx ends, from a
// watcher beside the chat's connection. A proxy that refuses it (an older
// one without /ws/events, a token that does not allow watching) costs the
// lines only, said once on stderr.
func chatPresence(ctx context.Context, e *env, cfg client.Config, policy client.Policy, self string, out *lockedWriter) {
	w, err := client.Watch(ctx, client.WatchConfig{Config: cfg, Policy: policy})
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintln(e.stderr, "wsproxy-cli: no presence lines:", err)
		}
		return
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintln(e.stderr, "wsproxy-cli: no more presence lines:", err)
			}
			return
		}
		if line := presenceLine(ev, self); line != "" {
			out.printf("%s * %s\n", stamp(), line)
		}
	}
}

func policyFlag(s string) (client.Policy, error) {
	switch s {
	case "auto":
		return client.DefaultPolicy, nil
	case "never":
		return client.NoReconnect, nil
	}
	return nil, fmt.Errorf("--reconnect must be auto or never, not %q", s)
}

// describeEnd says why a connection ended and what happens next.
func describeEnd(r client.Retry, delay time.Duration, again bool) string {
	s := "disconnected: "
	if r.Err != nil {
		s += r.Err.Error()
	}
	if again {
		return s + fmt.Sprintf("; reconnecting in %.1f s", delay.Seconds())
	}
	return s + "; not reconnecting"
}

func stamp() string { return time.Now().Format("15:04:05") }

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return clean(s)
}

// clean makes received text safe for a terminal: control characters other
// than tab and newline (escape sequences among them) become U+FFFD.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r < 0xa0) {
			return '\uFFFD'
		}
		return r
	}, s)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

func formatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
