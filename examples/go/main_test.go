package main

import (
	"context"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/client"
	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/proxytest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// The example answers a chat line through a real proxy.
func TestEchobot(t *testing.T) {
	p := proxytest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	botCtx, stopBot := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(botCtx, p.URL, "demo", "echobot") }()
	defer func() { stopBot(); <-done }()
	p.WaitMember(t, "demo", "echobot")

	me, err := client.Dial(ctx, client.Config{URL: p.URL, ID: "me", Group: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	defer me.Close()
	p.WaitMember(t, "demo", "me")
	if err := me.Send(ctx, client.Text, []byte(`{"type":"chat","from":"me","data":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	m, err := me.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Bytes(1000)
	e, err := client.ParseEnvelope(b)
	if err != nil || e.From != "echobot" || string(e.Data) != `"me said: hi"` {
		t.Fatalf("got %s", b)
	}
}
