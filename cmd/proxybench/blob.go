package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// blobResult is one large-message run.
type blobResult struct {
	system    string
	size      int64 // message size
	receivers int
	frag      int // 0: the message is sent as one frame; else fragment size
	wall, cpu time.Duration
	before    memStatus
	after     memStatus
}

// throughput is payload bytes delivered per second, summed over receivers.
func (r blobResult) throughput() float64 {
	return float64(r.size) * float64(r.receivers) / r.wall.Seconds()
}

// newBlob returns size bytes of a pattern receivers can check cheaply.
func newBlob(size int64) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i>>13)
	}
	return b
}

// sendBlob writes blob as one message: one frame, or fragments of frag bytes.
func sendBlob(ctx context.Context, c *websocket.Conn, blob []byte, frag int) error {
	if frag == 0 {
		return c.Write(ctx, websocket.MessageBinary, blob)
	}
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		return err
	}
	for off := 0; off < len(blob); off += frag {
		if _, err := w.Write(blob[off:min(off+frag, len(blob))]); err != nil {
			return err
		}
	}
	return w.Close()
}

// receiveBlob reads one message from c and checks it against blob.
func receiveBlob(ctx context.Context, c *websocket.Conn, blob []byte) error {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return err
	}
	if typ != websocket.MessageBinary {
		return errors.New("blob arrived as text")
	}
	buf := make([]byte, 256<<10)
	var off int
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if off+n > len(blob) || !bytes.Equal(buf[:n], blob[off:off+n]) {
				return fmt.Errorf("blob differs at or after byte %d", off)
			}
			off += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", off, len(blob), err)
		}
	}
	if off != len(blob) {
		return fmt.Errorf("blob of %d bytes arrived with %d", len(blob), off)
	}
	return nil
}

// runBlobProxy relays blob from one member to `receivers` others through a
// fresh wsproxy.
func runBlobProxy(ctx context.Context, b *binaries, logDir string, blob []byte, receivers, frag int) (blobResult, error) {
	res := blobResult{system: "wsproxy", size: int64(len(blob)), receivers: receivers, frag: frag}
	srv, err := startProxy(b, logDir)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	time.Sleep(200 * time.Millisecond)
	res.before = srv.mem()
	urls := make([]string, receivers+1)
	for i := range urls {
		urls[i] = wsproxyURL(srv.addr, "blob", "m"+strconv.Itoa(i))
	}
	res.wall, res.cpu, err = relayBlob(ctx, srv, urls, blob, frag)
	res.after = srv.mem()
	return res, err
}

// relayBlob connects one member at each of urls (members of one group), waits
// for srv to hold them all, then sends blob from the first to the others. It
// returns the time from the first write to the last receiver having checked
// every byte, and srv's CPU time over it.
func relayBlob(ctx context.Context, srv meter, urls []string, blob []byte, frag int) (wall, cpu time.Duration, err error) {
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			_ = c.CloseNow()
		}
	}()
	for _, u := range urls {
		c, _, err := websocket.Dial(ctx, u, nil)
		if err != nil {
			return 0, 0, err
		}
		c.SetReadLimit(-1)
		conns = append(conns, c)
	}
	if err := srv.waitConnections(len(urls), 10*time.Second); err != nil {
		return 0, 0, err
	}
	errs := make(chan error, len(urls))
	var wg sync.WaitGroup
	c0, t0 := srv.cpu(), time.Now()
	for i, c := range conns[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := receiveBlob(ctx, c, blob); err != nil {
				errs <- fmt.Errorf("receiver %d: %w", i+1, err)
			}
		}()
	}
	if err := sendBlob(ctx, conns[0], blob, frag); err != nil {
		return 0, 0, fmt.Errorf("send: %w", err)
	}
	wg.Wait()
	wall, cpu = time.Since(t0), srv.cpu()-c0
	close(errs)
	for err := range errs {
		return wall, cpu, err
	}
	return wall, cpu, nil
}

// runBlobDirect sends blob over `receivers` parallel connections straight to
// a baseline sink, each connection carrying the whole blob.
func runBlobDirect(ctx context.Context, srv *server, blob []byte, receivers, frag int) (blobResult, error) {
	res := blobResult{system: srv.name, size: int64(len(blob)), receivers: receivers, frag: frag, before: srv.mem()}
	errs := make(chan error, receivers)
	var wg, dialled sync.WaitGroup
	ready := make(chan struct{})
	for range receivers {
		wg.Add(1)
		dialled.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				defer func() {
					select {
					case <-ready:
					default:
						dialled.Done() // failed before the start
					}
				}()
				if srv.name == "tcp" {
					c, err := net.Dial("tcp", srv.addr)
					if err != nil {
						return err
					}
					defer c.Close()
					dialled.Done()
					<-ready
					if _, err := c.Write(blob); err != nil {
						return err
					}
					_ = c.(*net.TCPConn).CloseWrite()
					var n int64
					if _, err := fmt.Fscan(c, &n); err != nil {
						return err
					}
					if n != int64(len(blob)) {
						return fmt.Errorf("tcp sink read %d of %d bytes", n, len(blob))
					}
					return nil
				}
				c, _, err := websocket.Dial(ctx, "ws://"+srv.addr+"/", nil)
				if err != nil {
					return err
				}
				defer c.CloseNow()
				dialled.Done()
				<-ready
				if err := sendBlob(ctx, c, blob, frag); err != nil {
					return err
				}
				msgs, n, err := sinkReport(ctx, c)
				if err != nil {
					return err
				}
				if msgs != 1 || n != int64(len(blob)) {
					return fmt.Errorf("ws sink read %d messages, %d of %d bytes", msgs, n, len(blob))
				}
				return nil
			}()
		}()
	}
	// Connections are dialled before the clock starts.
	dialled.Wait()
	c0, t0 := srv.cpu(), time.Now()
	close(ready)
	wg.Wait()
	res.wall, res.cpu = time.Since(t0), srv.cpu()-c0
	res.after = srv.mem()
	close(errs)
	for err := range errs {
		if err != nil {
			return res, err
		}
	}
	return res, nil
}
