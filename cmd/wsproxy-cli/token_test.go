package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// --token-file against a proxy with --auth=jwt: the token goes out as a
// bearer token and lets the member in; without one the proxy's 401 and its
// reason are shown, with exit code 3.
func TestTokenFileWithJWTProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": sub, "groups": []string{"g"}, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, sub+".token")
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	url := startProxyProcess(t, "--auth", "jwt", "--jwt-secret-file", secretFile)
	cli := buildCLI(t)
	env := append(os.Environ(), "WSPROXY_URL="+url, "WSPROXY_GROUP=g")

	refused := exec.Command(cli, "pipe", "--id", "alice", "--receive-only", "--count", "1")
	refused.Env = env
	out, err := refused.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitRefused || !strings.Contains(string(out), "401 Unauthorized: ") {
		t.Fatalf("without a token: %v\n%s", err, out)
	}

	alice := exec.Command(cli, "pipe", "--id", "alice", "--receive-only", "--count", "1", "--token-file", token("alice"))
	alice.Env = env
	var aliceOut, aliceErr syncBuffer
	alice.Stdout, alice.Stderr = &aliceOut, &aliceErr
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- alice.Wait() }()
	t.Cleanup(func() { _ = alice.Process.Kill(); <-done })
	bob := exec.Command(cli, "pipe", "--id", "bob", "--exit-on-eof")
	bob.Env = append(env, "WSPROXY_TOKEN_FILE="+token("bob"))
	bob.Stdin = strings.NewReader("hi alice")
	// alice may not have joined yet when bob sends: send until she got it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := bob.CombinedOutput(); err != nil {
			t.Fatalf("bob: %v\n%s", err, out)
		}
		select {
		case err := <-done:
			done <- err
			if err != nil || aliceOut.String() != "hi alice" {
				t.Fatalf("alice: %v, got %q\n%s", err, aliceOut.String(), aliceErr.String())
			}
			return
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice got nothing: %s", aliceErr.String())
		}
		bob = exec.Command(cli, "pipe", "--id", "bob", "--exit-on-eof")
		bob.Env = append(env, "WSPROXY_TOKEN_FILE="+token("bob"))
		bob.Stdin = strings.NewReader("hi alice")
	}
}
