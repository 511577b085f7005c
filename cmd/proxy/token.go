package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/forward"
)

// mintToken prints a development token signed with an HMAC secret file: the
// quickest way to try --auth=jwt. Production tokens come from the
// deployment's own identity provider.
func mintToken(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("proxy token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	secretFile := fs.String("secret-file", "", "file holding the HMAC secret (the proxy's --jwt-secret-file)")
	sub := fs.String("sub", "", "the subject: the member id the token binds")
	groups := fs.String("groups", "", "comma-separated groups the token allows: names, prefix* patterns, or *")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	aud := fs.String("aud", "", "audience (the proxy's --jwt-audience, if set)")
	iss := fs.String("iss", "", "issuer (the proxy's --jwt-issuer, if set)")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: proxy token --secret-file F --sub ID --groups 'room-*' [--ttl 1h]\n\n"+
			"Prints a development token (HS256) for --auth=jwt. Make a secret with:\n"+
			"  head -c 32 /dev/urandom | base64 > secret\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *secretFile == "":
		return errors.New("token: --secret-file is required")
	case !forward.ValidID(*sub):
		return errors.New("token: --sub must be an id: 1-128 characters of A-Z a-z 0-9 - _ . ~")
	case *ttl <= 0:
		return errors.New("token: --ttl must be positive, such as 1h")
	}
	var gs []string
	for _, g := range strings.Split(*groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			gs = append(gs, g)
		}
	}
	if len(gs) == 0 {
		return errors.New("token: --groups is required (such as 'room-*', or '*' for every group)")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	secret = bytes.TrimSpace(secret)
	if len(secret) < auth.MinSecretBytes {
		return fmt.Errorf("token: the secret in %s must be at least %d bytes", *secretFile, auth.MinSecretBytes)
	}
	tok, err := auth.Mint(secret, *sub, gs, *ttl, *aud, *iss)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
