package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/client"
)

func watch(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("watch", "[flags]", `Print who is in the group, then one line per join and leave, with why they left (in the
words of the browser page, then the close code and reason). Watching is not membership: it sends
nothing and is not in the group. Reconnects by the shared policy unless --reconnect=never, and
resumes where it left off (a fresh "in GROUP:" line when events were missed). With --auth=jwt the
token must allow the group; the admin token (--token-file) may watch any group. --id is unused.`)
	reconnect := fs.String("reconnect", "auto", "auto (the shared policy) or never")
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
	w, err := client.Watch(ctx, client.WatchConfig{
		Config: cfg,
		Policy: policy,
		OnDisconnect: func(r client.Retry, delay time.Duration, again bool) {
			fmt.Fprintln(e.stderr, describeEnd(r, delay, again))
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return e.fail(err)
	}
	defer w.Close()
	fmt.Fprintf(e.stderr, "watching %q\n", c.group)
	out := &lockedWriter{w: e.stdout}
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			return e.fail(err)
		}
		if line := presenceLine(ev, ""); line != "" {
			out.printf("%s %s\n", stamp(), line)
		}
	}
}

// presenceLine describes an event in a line: the members of a snapshot,
// "X joined", "X reconnected" (a replacement), "X <why> (code reason)".
// Events about self (the chat's own id) are not described.
func presenceLine(ev client.Event, self string) string {
	switch ev.Type {
	case client.Snapshot:
		if len(ev.Members) == 0 {
			return fmt.Sprintf("in %s: nobody", clean(ev.Group))
		}
		ids := make([]string, len(ev.Members))
		for i, m := range ev.Members {
			ids[i] = clean(m.ID)
			if m.ID == self {
				ids[i] += " (you)"
			}
		}
		return fmt.Sprintf("in %s: %s (%d)", clean(ev.Group), strings.Join(ids, ", "), len(ids))
	case client.Join:
		if ev.ID == self {
			return ""
		}
		if ev.Replaced {
			return clean(ev.ID) + " reconnected"
		}
		return clean(ev.ID) + " joined"
	case client.Leave:
		if ev.ID == self {
			return ""
		}
		return fmt.Sprintf("%s %s (%d %s)", clean(ev.ID), ev.Why(), ev.Code, clean(ev.Reason))
	}
	return ""
}
