package natstest_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsproxy/wsproxy/internal/faultproxy"
	"github.com/wsproxy/wsproxy/internal/leakcheck"
	"github.com/wsproxy/wsproxy/internal/natstest"
)

// TestMain fails the package if a goroutine outlives its tests.
func TestMain(m *testing.M) { leakcheck.Main(m) }

// waitFor is how long a test waits for something that must happen.
const waitFor = 15 * time.Second

// client is a NATS connection that reconnects forever, every 50 ms, and
// reports its disconnections and reconnections.
type client struct {
	*nats.Conn
	disconnected chan error
	reconnected  chan struct{}
}

func connect(t *testing.T, url string, opts ...nats.Option) *client {
	t.Helper()
	c := &client{disconnected: make(chan error, 100), reconnected: make(chan struct{}, 100)}
	opts = append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			select {
			case c.disconnected <- err:
			default:
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case c.reconnected <- struct{}{}:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	c.Conn = nc
	t.Cleanup(nc.Close)
	return c
}

// waitDisconnected returns the error the client's connection ended with.
func (c *client) waitDisconnected(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.disconnected:
		return err
	case <-time.After(waitFor):
		t.Fatalf("not disconnected after %v (status %v)", waitFor, c.Status())
		return nil
	}
}

func (c *client) waitReconnected(t *testing.T) {
	t.Helper()
	select {
	case <-c.reconnected:
	case <-time.After(waitFor):
		t.Fatalf("not reconnected after %v (status %v)", waitFor, c.Status())
	}
}

// pubSub proves a message goes from c through the server back to c.
func pubSub(t *testing.T, c *client, subject string) {
	t.Helper()
	sub, err := c.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := c.Publish(subject, []byte("hello "+subject)); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(waitFor)
	if err != nil {
		t.Fatalf("receive on %s: %v", subject, err)
	}
	if got := string(msg.Data); got != "hello "+subject {
		t.Fatalf("received %q", got)
	}
}

// kvPutGet creates bucket (memory storage) and proves a Put can be read back.
func kvPutGet(t *testing.T, c *client, bucket string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	rev, err := kv.Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if string(e.Value()) != "v" || e.Revision() != rev {
		t.Fatalf("get: %q at revision %d, want %q at %d", e.Value(), e.Revision(), "v", rev)
	}
	return js
}

func TestStart(t *testing.T) {
	s := natstest.Start(t, natstest.MaxPayload(4096))
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") || s.URL() != "nats://"+s.Addr() {
		t.Errorf("URL() = %q, Addr() = %q", s.URL(), s.Addr())
	}
	if !s.Server().JetStreamEnabled() {
		t.Error("JetStream is off")
	}
	c := connect(t, s.URL())
	if got := c.MaxPayload(); got != 4096 {
		t.Errorf("client sees max_payload %d, want 4096", got)
	}
	if err := c.Publish("big", make([]byte, 4097)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("publish beyond max_payload: %v", err)
	}
	pubSub(t, c, "a")
	kvPutGet(t, c, "bucket")
}

// Stop breaks the client's connection; Restart brings a server back on the
// same URL, the client reconnects by itself, and JetStream works again, with
// the memory bucket gone as documented.
func TestStopRestart(t *testing.T) {
	s := natstest.Start(t)
	url := s.URL()
	c := connect(t, url)
	kvPutGet(t, c, "members")
	pubSub(t, c, "before")

	s.Stop()
	if conn, err := net.Dial("tcp", s.Addr()); err == nil {
		conn.Close()
		t.Error("the server still accepts when Stop has returned")
	}
	c.waitDisconnected(t)
	if err := c.FlushTimeout(time.Second); err == nil {
		t.Error("flush succeeded with the server stopped")
	}
	if st := c.Status(); st != nats.RECONNECTING {
		t.Errorf("status %v while stopped, want RECONNECTING", st)
	}

	s.Restart()
	if s.URL() != url {
		t.Errorf("URL changed from %s to %s", url, s.URL())
	}
	c.waitReconnected(t)
	pubSub(t, c, "after")
	js, err := jetstream.New(c.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.KeyValue(ctx, "members"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("memory bucket after Restart: %v, want %v", err, jetstream.ErrBucketNotFound)
	}
	kvPutGet(t, c, "members")

	s.Restart() // from a running server too
	c.waitReconnected(t)
	kvPutGet(t, c, "again")
}

// Restart waits for a port someone else still holds.
func TestRestartPortBusy(t *testing.T) {
	s := natstest.Start(t)
	s.Stop()
	ln, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("take the stopped server's port: %v", err)
	}
	const busy = 300 * time.Millisecond
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(busy)
		ln.Close()
	}()
	start := time.Now()
	s.Restart()
	<-released
	if took := time.Since(start); took < busy {
		t.Errorf("Restart returned after %v while the port was held for %v", took, busy)
	}
	c := connect(t, s.URL())
	pubSub(t, c, "restarted")
}

// A client behind a faultproxy: Cut disconnects it and keeps it out, Pass
// lets it back; Blackhole makes its pings go unanswered.
func TestThroughFaultProxy(t *testing.T) {
	s := natstest.Start(t)
	p := faultproxy.New(t, s.Addr())
	c := connect(t, p.URL(), nats.PingInterval(100*time.Millisecond), nats.MaxPingsOutstanding(2))
	pubSub(t, c, "direct")
	kvPutGet(t, c, "through")

	p.Cut()
	if err := c.waitDisconnected(t); err == nil {
		t.Error("disconnected without an error")
	}
	time.Sleep(300 * time.Millisecond) // several reconnect attempts, each refused
	if st := c.Status(); st != nats.RECONNECTING {
		t.Errorf("status %v while cut, want RECONNECTING", st)
	}
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() = %d while cut", n)
	}

	p.Pass()
	c.waitReconnected(t)
	pubSub(t, c, "healed")

	p.Blackhole()
	if err := c.waitDisconnected(t); !errors.Is(err, nats.ErrStaleConnection) {
		t.Errorf("disconnected by %v, want %v", err, nats.ErrStaleConnection)
	}
	p.Pass()
	c.waitReconnected(t)
	pubSub(t, c, "healed.again")
	kvPutGet(t, c, "through-again")
}

// TestCluster: three servers form a JetStream cluster; a three-replica KV
// bucket keeps working when the server a client uses stops (the client
// moves to another), and the stopped server rejoins.
func TestCluster(t *testing.T) {
	ss := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(ss[0].URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", Storage: jetstream.MemoryStorage, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Until the bucket has a leader (after it is made, and after a server
	// it used stops, with the client moving to another), a put may fail
	// or its answer be lost: each try is bounded, and retried.
	put := func(v string) {
		for {
			try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
			_, err := kv.Put(try, "k", []byte(v))
			cancelTry()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("put %s: %v", v, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	put("1")
	natstest.AwaitStream(t, ss, "KV_b")
	ss[0].Stop()
	put("2")
	// A read may be served by a replica that has not caught up yet.
	for {
		try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		e, err := kv.Get(try, "k")
		cancelTry()
		if err == nil && string(e.Value()) == "2" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("get with a server down: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ss[0].Restart()
	natstest.AwaitCluster(t, ss)
}
