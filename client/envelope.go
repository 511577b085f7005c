package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Envelope is the typed message convention of docs/protocol.md section 13:
// one text message holding a JSON object. Type names are chosen by the
// application and stable across languages. From is what the sender's
// library claims; the proxy neither checks nor rewrites it.
type Envelope struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	From    string          `json:"from,omitempty"`
	ReplyTo string          `json:"reply_to,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// ParseEnvelope reads b as an envelope. It fails for text that is not a
// JSON object with a non-empty string "type".
func ParseEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if e.Type == "" {
		return nil, errors.New("client: not an envelope: no type")
	}
	return &e, nil
}

// NewID returns a random id for an envelope (128 bits, hex).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Meta is what came with a typed message besides its data.
type Meta struct {
	Envelope
	c *Client
}

// Reply sends v as typeName to the whole group (the proxy has no unicast),
// marked as the answer to this message; the asker's Request matches it.
func (m *Meta) Reply(ctx context.Context, typeName string, v any) error {
	return m.c.sendEnvelope(ctx, typeName, m.ID, v, NewID())
}

// On registers h for messages of typeName, whose data is decoded as a T.
// It must be called before Run; a second handler for the same name panics
// (a silent replacement would hide a bug). A message whose data does not
// decode as a T is reported to Config.OnError and skipped.
func On[T any](c *Client, typeName string, h func(ctx context.Context, v T, m *Meta) error) {
	c.handle(typeName, func(ctx context.Context, e *Envelope) error {
		var v T
		if len(e.Data) > 0 {
			if err := json.Unmarshal(e.Data, &v); err != nil {
				return fmt.Errorf("client: %q from %q: data: %w", e.Type, e.From, err)
			}
		}
		return h(ctx, v, &Meta{Envelope: *e, c: c})
	})
}

// Request sends req as typeName and waits for the reply whose reply_to is
// its id, for as long as ctx allows (the timeout is ctx's). The reply's data
// is decoded as a Resp. Safe to call from a handler.
func Request[Resp any](ctx context.Context, c *Client, typeName string, req any) (Resp, error) {
	var zero Resp
	id := NewID()
	ch := make(chan *Envelope, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.sendEnvelope(ctx, typeName, "", req, id); err != nil {
		return zero, err
	}
	select {
	case e := <-ch:
		var v Resp
		if len(e.Data) > 0 {
			if err := json.Unmarshal(e.Data, &v); err != nil {
				return zero, fmt.Errorf("client: reply %q: %w", e.Type, err)
			}
		}
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-c.done:
		return zero, ErrClosed
	}
}

// SendJSON sends v as the data of a typeName envelope.
func (c *Client) SendJSON(ctx context.Context, typeName string, v any) error {
	return c.sendEnvelope(ctx, typeName, "", v, NewID())
}

func (c *Client) sendEnvelope(ctx context.Context, typeName, replyTo string, v any, id string) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("client: %q: %w", typeName, err)
	}
	b, err := json.Marshal(Envelope{Type: typeName, ID: id, From: c.cfg.ID, ReplyTo: replyTo, Data: data})
	if err != nil {
		return err
	}
	return c.Send(ctx, Text, b)
}
