// Command wsproxy-cli is a terminal client for a wsproxy group: chat, pipe
// bytes like websocat, and send and receive files. Run it without arguments
// for the usage; docs/cli.md has the whole manual.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"

	"github.com/wsproxy/wsproxy/client"
)

// Exit codes (also in the usage text and docs/cli.md).
const (
	exitOK      = 0 // done
	exitError   = 1 // an error: network, files, the connection lost
	exitUsage   = 2 // bad command line
	exitRefused = 3 // the proxy refused the connection (HTTP status and reason printed)
	exitClosed  = 4 // the proxy closed the connection with a code that says not to reconnect
	exitBadFile = 5 // receive: a file failed verification or was refused (unsafe name, too big)
)

const usage = `wsproxy-cli: a terminal client for a wsproxy group.

Usage:
  wsproxy-cli chat    [flags]            lines in, lines out (who sent what, when)
  wsproxy-cli pipe    [flags]            stdin to the group, the group to stdout, like websocat
  wsproxy-cli send    [flags] FILE...    send files (name, size, type, SHA-256), with progress
  wsproxy-cli receive [flags] --dir DIR  save the files sent to the group, verified
  wsproxy-cli watch   [flags]            who is in the group, and who joins and leaves (presence)
  wsproxy-cli help [COMMAND]
  (flags without a command mean chat)

Flags every command takes (each also from the environment; a flag wins):
  --url URL          the proxy's WebSocket endpoint (WSPROXY_URL; default ws://127.0.0.1:8080/ws)
  --group NAME       the group to join (WSPROXY_GROUP; required)
  --id ID            this member's id (WSPROXY_ID; default <user>-<4 hex digits>)
  --token-file FILE  a bearer token to send, read from FILE (WSPROXY_TOKEN_FILE, or the token
                     itself in WSPROXY_TOKEN); never put a token on the command line

Run "wsproxy-cli help COMMAND" for a command's own flags.

Exit codes:
  0  done
  1  an error (network, files, the connection lost)
  2  bad command line
  3  the proxy refused the connection (its HTTP status and reason are printed)
  4  the proxy closed the connection with a code that says not to reconnect (printed)
  5  receive: a file failed verification or was refused (unsafe name, too big)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// env is what a command runs with; tests build one in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	stdinTTY       bool // stdin is a terminal
	stderrTTY      bool // stderr is a terminal
}

// run is the whole program: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv,
		stdinTTY: isTTY(stdin), stderrTTY: isTTY(stderr)}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	if strings.HasPrefix(cmd, "-") && cmd != "-h" && cmd != "-help" && cmd != "--help" {
		cmd, rest = "chat", args // flags and no command: chat, as the first wsproxy-cli did
	}
	commands := map[string]func(context.Context, *env, []string) int{
		"chat": chat, "pipe": pipe, "send": send, "receive": receive, "watch": watch,
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && commands[rest[0]] != nil {
			return commands[rest[0]](ctx, e, []string{"-h"})
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	f := commands[cmd]
	if f == nil {
		fmt.Fprintf(stderr, "wsproxy-cli: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	return f(ctx, e, rest)
}

func isTTY(x any) bool {
	f, ok := x.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// common are the flags every command takes.
type common struct {
	url, group, id, tokenFile string
}

func (e *env) flags(name, args string, about string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c := &common{}
	fs.StringVar(&c.url, "url", or(e.getenv("WSPROXY_URL"), "ws://127.0.0.1:8080/ws"), "the proxy's WebSocket endpoint (WSPROXY_URL)")
	fs.StringVar(&c.group, "group", e.getenv("WSPROXY_GROUP"), "the group to join (WSPROXY_GROUP; required)")
	fs.StringVar(&c.id, "id", e.getenv("WSPROXY_ID"), "this member's id (WSPROXY_ID; default <user>-<4 hex digits>)")
	fs.StringVar(&c.tokenFile, "token-file", e.getenv("WSPROXY_TOKEN_FILE"), "send the bearer token in this file (WSPROXY_TOKEN_FILE; or the token in WSPROXY_TOKEN)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: wsproxy-cli %s %s\n\n%s\n\nFlags:\n", name, args, about)
		fs.PrintDefaults()
		fmt.Fprint(e.stderr, "\nExit codes: 0 done, 1 error, 2 usage, 3 refused by the proxy, 4 closed by the proxy,\n5 a received file failed verification or was refused.\n")
	}
	return fs, c
}

// parse parses args; a non-negative result is the exit code to stop with.
func (e *env) parse(fs *flag.FlagSet, c *common, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if c.group == "" {
		fmt.Fprintln(e.stderr, "wsproxy-cli: --group (or WSPROXY_GROUP) is required")
		return exitUsage
	}
	if c.id == "" {
		c.id = defaultID()
	}
	return -1
}

func (c *common) config(e *env) (client.Config, error) {
	cfg := client.Config{URL: c.url, ID: c.id, Group: c.group}
	switch {
	case c.tokenFile != "":
		file := c.tokenFile
		cfg.TokenSource = func(context.Context) (string, error) {
			b, err := os.ReadFile(file) // read each attempt: a rotated token is picked up
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
		if _, err := cfg.TokenSource(context.Background()); err != nil {
			return cfg, fmt.Errorf("--token-file: %w", err)
		}
	case e.getenv("WSPROXY_TOKEN") != "":
		tok := e.getenv("WSPROXY_TOKEN")
		cfg.TokenSource = func(context.Context) (string, error) { return tok, nil }
	}
	return cfg, nil
}

func defaultID() string {
	name := "user"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	name = strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.~", r)) {
			return r
		}
		return -1
	}, name)
	if name == "" || len(name) > 100 {
		name = "user"
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fail prints err as the proxy or the system said it and returns its exit
// code.
func (e *env) fail(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(e.stderr, "wsproxy-cli:", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var he *client.HandshakeError
	var ce *client.CloseError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &he):
		return exitRefused
	case errors.As(err, &ce):
		return exitClosed
	}
	return exitError
}
