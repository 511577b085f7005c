package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The baseline servers. "ws" is a direct WebSocket stream with no relay: a
// coder/websocket server that reads every message and discards it. "tcp" is a
// raw loopback TCP connection whose bytes are read and discarded.
//
// A ws client asks for the counts of its connection with the text message
// "report"; the sink answers with "<messages> <bytes>" (the report message not
// counted). A tcp client half-closes its side; the sink answers with the byte
// count and closes.

// runSink is the "proxybench sink" subcommand: it serves until stdin closes.
func runSink(args []string) error {
	fs := flag.NewFlagSet("proxybench sink", flag.ContinueOnError)
	mode := fs.String("mode", "ws", "ws or tcp")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", ln.Addr().String())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	switch *mode {
	case "ws":
		return serveWSSink(ln, nil)
	case "tcp":
		return serveTCPSink(ln)
	}
	return fmt.Errorf("sink: unknown mode %q", *mode)
}

// sinkBufs are the buffers the sinks read into, only while reading: large,
// so that the baselines read as fast as they can (the proxy reads streamed
// messages into a ring of 2 MiB).
var sinkBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// serveWSSink serves WebSocket connections on ln until it fails. onMsg, if
// set, is called with the start (at least 16 bytes, when the message has
// them) of each message and its arrival time.
func serveWSSink(ln net.Listener, onMsg func(p []byte, at time.Time)) error {
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
			if err != nil {
				return
			}
			c.SetReadLimit(-1)
			defer c.CloseNow()
			var msgs, bytes int64
			for {
				typ, rd, err := c.Reader(context.Background())
				if err != nil {
					return
				}
				bp := sinkBufs.Get().(*[]byte)
				buf := *bp
				n, err := io.ReadAtLeast(rd, buf, 16)
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = nil
				}
				if err == nil && onMsg != nil {
					onMsg(buf[:n], time.Now())
				}
				if typ == websocket.MessageText && string(buf[:n]) == "report" {
					sinkBufs.Put(bp)
					reply := strconv.FormatInt(msgs, 10) + " " + strconv.FormatInt(bytes, 10)
					if c.Write(context.Background(), websocket.MessageText, []byte(reply)) != nil {
						return
					}
					continue
				}
				total := int64(n)
				for err == nil {
					n, err = rd.Read(buf)
					total += int64(n)
				}
				sinkBufs.Put(bp)
				if err != io.EOF {
					return
				}
				msgs++
				bytes += total
			}
		}),
	}
	return srv.Serve(ln)
}

func serveTCPSink(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			// Wait for data before taking a buffer, so that an idle
			// connection holds none.
			var one [1]byte
			n, err := c.Read(one[:])
			total := int64(n)
			if err == nil {
				bp := sinkBufs.Get().(*[]byte)
				for err == nil {
					n, err = c.Read(*bp)
					total += int64(n)
				}
				sinkBufs.Put(bp)
			}
			if err != io.EOF {
				return
			}
			_, _ = io.WriteString(c, strconv.FormatInt(total, 10)+"\n")
		}()
	}
}
