// Command wsproxy-cli joins a wsproxy group from a terminal: each line typed
// is sent as a text message, and each message received is printed.
//
//	wsproxy-cli -id alice -group demo
//	wsproxy-cli -id bob -group demo -send-file blob.bin   # one binary message
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"unicode/utf8"

	"github.com/coder/websocket"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wsproxy-cli:", err)
		os.Exit(1)
	}
}

func run() error {
	server := flag.String("url", "ws://127.0.0.1:8080/ws", "proxy WebSocket URL")
	id := flag.String("id", "", "this client's id (required)")
	group := flag.String("group", "", "group to join (required)")
	sendFile := flag.String("send-file", "", "send this file as one binary message, then keep listening")
	flag.Parse()
	if *id == "" || *group == "" {
		flag.Usage()
		return errors.New("-id and -group are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	u := *server + "?id=" + url.QueryEscape(*id) + "&groupName=" + url.QueryEscape(*group)
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return err
	}
	c.SetReadLimit(-1)
	defer c.CloseNow()
	fmt.Fprintf(os.Stderr, "joined %q as %q; type lines to send, Ctrl-D to leave\n", *group, *id)

	readErr := make(chan error, 1)
	go func() { readErr <- receive(context.Background(), c) }()

	if *sendFile != "" {
		if err := sendBinary(ctx, c, *sendFile); err != nil {
			return err
		}
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return c.Close(websocket.StatusNormalClosure, "")
		case err := <-readErr:
			return err
		case line, ok := <-lines:
			if !ok {
				return c.Close(websocket.StatusNormalClosure, "")
			}
			if err := c.Write(ctx, websocket.MessageText, []byte(line)); err != nil {
				return err
			}
		}
	}
}

func receive(ctx context.Context, c *websocket.Conn) error {
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("connection closed: %d %s", int(ce.Code), ce.Reason)
			}
			return err
		}
		if typ == websocket.MessageText && utf8.Valid(b) {
			fmt.Println(strconv.Quote(string(b)))
		} else {
			fmt.Printf("<binary message, %d bytes>\n", len(b))
		}
	}
}

func sendBinary(ctx context.Context, c *websocket.Conn, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		return err
	}
	n, err := io.CopyBuffer(w, f, make([]byte, 64<<10))
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sent %s (%d bytes)\n", path, n)
	return nil
}
