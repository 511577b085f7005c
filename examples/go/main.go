// Command echobot is the Go example: it joins a group with the client
// package and answers every chat line with the same line, reconnecting by
// the shared policy. Run: go run ./examples/go -url ws://127.0.0.1:8080/ws -group demo
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/wsproxy/wsproxy/client"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/ws", "the proxy's WebSocket endpoint")
	group := flag.String("group", "demo", "the group to join")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *url, *group, "echobot"); err != nil {
		fmt.Fprintln(os.Stderr, "echobot:", err)
		os.Exit(1)
	}
}

// run answers chat lines until ctx ends (nil) or the policy gives up.
func run(ctx context.Context, url, group, id string) error {
	c := client.New(client.ClientConfig{Config: client.Config{URL: url, ID: id, Group: group}})
	client.On(c, "chat", func(ctx context.Context, line string, m *client.Meta) error {
		return c.SendJSON(ctx, "chat", m.From+" said: "+line)
	})
	return c.Run(ctx)
}
