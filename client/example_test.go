package client_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

// Two connections in one group: what one sends, the other reads as a
// stream.
func ExampleDial() {
	proxy := proxytest.New() // a real proxy, in-process; use your proxy's URL instead
	defer proxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, client.Config{URL: proxy.URL, ID: "alice", Group: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, client.Config{URL: proxy.URL, ID: "bob", Group: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Close()
	waitMember(proxy, "demo", "bob")

	// Any reader becomes one message, sent as it is read.
	if _, err := alice.SendStream(ctx, client.Text, strings.NewReader("hello, bob")); err != nil {
		fmt.Println(err)
		return
	}
	m, err := bob.Next(ctx) // ctx bounds the wait only
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := io.ReadAll(m) // or io.Copy to a file: never whole in memory
	fmt.Printf("%s: %s\n", m.Type, b)
	// Output: text: hello, bob
}

// A refused connection says why, in the proxy's words.
func ExampleHandshakeError() {
	proxy := proxytest.New()
	defer proxy.Close()
	_, err := client.Dial(context.Background(), client.Config{URL: proxy.URL, ID: "no spaces", Group: "demo"})
	fmt.Println(err)
	// Output: proxy refused the connection: 400 Bad Request: parameter id must be 1-128 characters of A-Z a-z 0-9 - _ . ~
}

type Ping struct{ N int }
type Pong struct{ N int }

// Typed request and reply on the envelope, with a reconnecting Client.
func ExampleRequest() {
	proxy := proxytest.New()
	defer proxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	server := client.New(client.ClientConfig{Config: client.Config{URL: proxy.URL, ID: "server", Group: "demo"}})
	client.On(server, "ping", func(ctx context.Context, p Ping, m *client.Meta) error {
		return m.Reply(ctx, "pong", Pong{N: p.N + 1})
	})
	asker := client.New(client.ClientConfig{Config: client.Config{URL: proxy.URL, ID: "asker", Group: "demo"}})
	go server.Run(ctx)
	go asker.Run(ctx)
	defer func() { server.Close(); asker.Close(); <-server.Done(); <-asker.Done() }()
	_ = server.WaitConnected(ctx)
	_ = asker.WaitConnected(ctx)
	waitMember(proxy, "demo", "server")

	reply, err := client.Request[Pong](ctx, asker, "ping", Ping{N: 41}) // the timeout is ctx's
	fmt.Println(reply.N, err)
	// Output: 42 <nil>
}

func waitMember(p *proxytest.Proxy, group, id string) {
	for deadline := time.Now().Add(20 * time.Second); !p.IsMember(group, id) && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
}

// Watching who joins and leaves a group (presence), beside the data
// connection.
func ExampleWatch() {
	proxy := proxytest.New()
	defer proxy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	w, err := client.Watch(ctx, client.WatchConfig{Config: client.Config{URL: proxy.URL, Group: "demo"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	ev, _ := w.Next(ctx) // first, who is there
	fmt.Println(ev.Type, len(ev.Members))

	bob, err := client.Dial(ctx, client.Config{URL: proxy.URL, ID: "bob", Group: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ev, _ = w.Next(ctx)
	fmt.Println(ev.Type, ev.ID, ev.Seq)
	_ = bob.Close()
	ev, _ = w.Next(ctx)
	fmt.Println(ev.Type, ev.ID, ev.Code, ev.Why())
	// Output:
	// snapshot 0
	// join bob 1
	// leave bob 1000 left
}
