package config_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1", 1},
		{"1048576", 1 << 20},
		{"5B", 5},
		{"1KiB", 1 << 10},
		{"64KiB", 64 << 10},
		{"1MiB", 1 << 20},
		{"8MiB", 8 << 20},
		{"3GiB", 3 << 30},
		{"1KB", 1000},
		{"2MB", 2e6},
		{"1GB", 1e9},
		{" 16 MiB ", 16 << 20},
		{"4294967296GiB", 1 << 62}, // the largest accepted
		{"4611686018427387904", 1 << 62},
	}
	for _, tt := range tests {
		got, err := config.ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"", " ", "B", "MiB", "-1", "-1KiB", "1.5MiB", "1e6", "0x10", "lots",
		"1kib", "1 TiB", "1TB", "KiB1", "1MiBB",
		"4294967297GiB",       // over 2^62 bytes
		"4611686018427387905", // over 2^62 bytes
		"9223372036854775808", // over int64
	} {
		n, err := config.ParseSize(in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
			continue
		}
		if !strings.Contains(err.Error(), "invalid size") {
			t.Errorf("ParseSize(%q) error %q does not say what is wrong", in, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1000"},
		{1023, "1023"},
		{1 << 10, "1KiB"},
		{1536, "1536"},
		{3 << 10, "3KiB"},
		{1 << 20, "1MiB"},
		{1<<20 + 1<<10, "1025KiB"},
		{8 << 20, "8MiB"},
		{1 << 30, "1GiB"},
		{5 << 30, "5GiB"},
		{1 << 40, "1024GiB"},
	}
	for _, tt := range tests {
		if got := config.FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestFormatSizeRoundTrip proves what the startup log prints can be given back
// as a flag value.
func TestFormatSizeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 999, 1 << 10, 1<<10 + 1, 3 << 20, 1<<30 - 1, 7 << 30, 1 << 62} {
		s := config.FormatSize(n)
		got, err := config.ParseSize(s)
		if err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	for flag, want := range map[string]string{
		"addr":                 "PROXY_ADDR",
		"log-level":            "PROXY_LOG_LEVEL",
		"send-queue-bytes":     "PROXY_SEND_QUEUE_BYTES",
		"message-idle-timeout": "PROXY_MESSAGE_IDLE_TIMEOUT",
		"allowed-origins":      "PROXY_ALLOWED_ORIGINS",
	} {
		if got := config.EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func parse(t *testing.T, args []string, vars map[string]string) *config.Config {
	t.Helper()
	c, err := config.Parse(args, env(vars), io.Discard)
	if err != nil {
		t.Fatalf("Parse(%q, %v): %v", args, vars, err)
	}
	return c
}

// TestDefaults checks the defaults of SPEC section 7 and the README table.
func TestDefaults(t *testing.T) {
	t.Parallel()
	got := parse(t, nil, nil)
	want := &config.Config{
		Addr:            ":8080",
		LogLevel:        "info",
		LogFormat:       "",
		ShutdownTimeout: 10 * time.Second,
		Auth:            "none",
		Forward: forward.Options{
			MaxMessageBytes:    0,
			BufferBytes:        1 << 20,
			MessageIdleTimeout: 30 * time.Second,
			SendQueueBytes:     8 << 20,
			SlowConsumer:       forward.Backpressure,
			WriteTimeout:       10 * time.Second,
			PingInterval:       30 * time.Second,
			PingTimeout:        10 * time.Second,
			CloseGrace:         2 * time.Second,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

// TestEveryFlagHasEnv sets every setting through its environment variable
// only, then through its flag only, and expects the same configuration.
func TestEveryFlagHasEnv(t *testing.T) {
	t.Parallel()
	values := map[string]string{
		"addr":                 "127.0.0.1:9999",
		"log-level":            "debug",
		"log-format":           "console",
		"max-message-bytes":    "64MiB",
		"buffer-bytes":         "256KiB",
		"message-idle-timeout": "7s",
		"send-queue-bytes":     "2MiB",
		"slow-consumer":        "disconnect",
		"write-timeout":        "3s",
		"ping-interval":        "5s",
		"ping-timeout":         "2s",
		"shutdown-timeout":     "1m",
		"allowed-origins":      "*.example.com, https://app.example.org",
		"admin-token":          "s3cret",
		// identity and TLS
		"auth":                     "jwt",
		"jwt-secret-file":          "/run/secrets/jwt",
		"jwt-previous-secret-file": "/run/secrets/jwt.old",
		"jwt-public-key-file":      "/run/secrets/jwt.pem",
		"jwt-audience":             "wsproxy",
		"jwt-issuer":               "https://id.example",
		"tls-cert-file":            "/etc/tls/cert.pem",
		"tls-key-file":             "/etc/tls/key.pem",
	}
	vars := map[string]string{}
	var args []string
	for name, v := range values {
		vars[config.EnvName(name)] = v
		args = append(args, "--"+name+"="+v)
	}
	fromEnv := parse(t, nil, vars)
	fromFlags := parse(t, args, nil)
	if !reflect.DeepEqual(fromEnv, fromFlags) {
		t.Fatalf("env and flags disagree:\n env   %+v\n flags %+v", fromEnv, fromFlags)
	}
	want := &config.Config{
		Addr:            "127.0.0.1:9999",
		LogLevel:        "debug",
		LogFormat:       "console",
		ShutdownTimeout: time.Minute,
		AdminToken:      "s3cret",
		Auth:            "jwt",
		JWT: auth.Options{
			SecretFiles:   []string{"/run/secrets/jwt", "/run/secrets/jwt.old"},
			PublicKeyFile: "/run/secrets/jwt.pem",
			Audience:      "wsproxy",
			Issuer:        "https://id.example",
		},
		TLSCertFile: "/etc/tls/cert.pem",
		TLSKeyFile:  "/etc/tls/key.pem",
		Forward: forward.Options{
			MaxMessageBytes:    64 << 20,
			BufferBytes:        256 << 10,
			MessageIdleTimeout: 7 * time.Second,
			SendQueueBytes:     2 << 20,
			SlowConsumer:       forward.Disconnect,
			WriteTimeout:       3 * time.Second,
			PingInterval:       5 * time.Second,
			PingTimeout:        2 * time.Second,
			AllowedOrigins:     []string{"*.example.com", "https://app.example.org"},
			CloseGrace:         2 * time.Second,
		},
	}
	if !reflect.DeepEqual(fromEnv, want) {
		t.Errorf("from env:\n got %+v\nwant %+v", fromEnv, want)
	}
}

func TestFlagWinsOverEnv(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"PROXY_ADDR":             ":1111",
		"PROXY_SEND_QUEUE_BYTES": "16MiB",
		"PROXY_SLOW_CONSUMER":    "disconnect",
		"PROXY_WRITE_TIMEOUT":    "1s",
	}
	c := parse(t, []string{
		"--addr", ":2222",
		"--slow-consumer=backpressure", // the default, given explicitly: still wins
		"--write-timeout=0",
	}, vars)
	if c.Addr != ":2222" {
		t.Errorf("Addr = %q, want the flag's :2222", c.Addr)
	}
	if c.Forward.SlowConsumer != forward.Backpressure {
		t.Errorf("SlowConsumer = %v, want the flag's backpressure", c.Forward.SlowConsumer)
	}
	if c.Forward.WriteTimeout != 0 {
		t.Errorf("WriteTimeout = %v, want the flag's 0", c.Forward.WriteTimeout)
	}
	if c.Forward.SendQueueBytes != 16<<20 {
		t.Errorf("SendQueueBytes = %d, want the environment's 16MiB", c.Forward.SendQueueBytes)
	}
}

func TestEmptyEnvIsUnset(t *testing.T) {
	t.Parallel()
	c := parse(t, nil, map[string]string{"PROXY_ADDR": "", "PROXY_SEND_QUEUE_BYTES": ""})
	if c.Addr != ":8080" || c.Forward.SendQueueBytes != 8<<20 {
		t.Errorf("empty variables changed settings: addr %q, send queue %d", c.Addr, c.Forward.SendQueueBytes)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	_, err := config.Parse([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("Parse(--help) error = %v, want ErrHelp", err)
	}
	if !strings.Contains(out.String(), "--send-queue-bytes [PROXY_SEND_QUEUE_BYTES]") {
		t.Errorf("usage lacks --send-queue-bytes with its variable:\n%s", out.String())
	}
}

// TestInvalid checks that every bad value is refused with an error that names
// the setting (and, for the environment, the variable) at fault.
func TestInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the error
	}{
		{"unknown flag", []string{"--bogus"}, nil, []string{"bogus"}},
		{"positional argument", []string{"serve"}, nil, []string{`unexpected argument "serve"`}},
		{"bad size flag", []string{"--send-queue-bytes=lots"}, nil, []string{"send-queue-bytes", "invalid size"}},
		{"bad size env", nil, map[string]string{"PROXY_SEND_QUEUE_BYTES": "lots"}, []string{"PROXY_SEND_QUEUE_BYTES", "invalid size"}},
		{"bad duration flag", []string{"--write-timeout=soon"}, nil, []string{"write-timeout"}},
		{"bad duration env", nil, map[string]string{"PROXY_PING_INTERVAL": "often"}, []string{"PROXY_PING_INTERVAL"}},
		{"bad policy flag", []string{"--slow-consumer=drop"}, nil, []string{"slow-consumer", "backpressure or disconnect"}},
		{"bad policy env", nil, map[string]string{"PROXY_SLOW_CONSUMER": "drop"}, []string{"slow-consumer"}},
		{"bad log format", []string{"--log-format=xml"}, nil, []string{"log-format", "json or console"}},
		{"buffer too small", []string{"--buffer-bytes=1023"}, nil, []string{"buffer-bytes", "1KiB"}},
		{"buffer too large", []string{"--buffer-bytes=2GiB"}, nil, []string{"buffer-bytes", "1GiB"}},
		{"queue too small", []string{"--send-queue-bytes=512B"}, nil, []string{"send-queue-bytes", "1KiB"}},
		{"negative size", []string{"--max-message-bytes=-1"}, nil, []string{"max-message-bytes"}},
		{"negative write timeout", []string{"--write-timeout=-1s"}, nil, []string{"write-timeout", "negative"}},
		{"negative idle timeout", []string{"--message-idle-timeout=-1s"}, nil, []string{"message-idle-timeout", "negative"}},
		{"negative ping interval", []string{"--ping-interval=-1s"}, nil, []string{"ping-interval", "negative"}},
		{"negative shutdown timeout", []string{"--shutdown-timeout=-1s"}, nil, []string{"shutdown-timeout", "negative"}},
		{"zero ping timeout", []string{"--ping-timeout=0"}, nil, []string{"ping-timeout"}},
		{"negative ping timeout env", nil, map[string]string{"PROXY_PING_TIMEOUT": "-1s"}, []string{"ping-timeout"}},
		// identity and TLS
		{"bad auth", []string{"--auth=basic"}, nil, []string{"auth", "none or jwt"}},
		{"jwt without a key", []string{"--auth=jwt"}, nil, []string{"--jwt-secret-file", "--jwt-public-key-file"}},
		{"key without jwt", []string{"--jwt-secret-file=/x"}, nil, []string{"--auth=jwt"}},
		{"audience without jwt", nil, map[string]string{"PROXY_JWT_AUDIENCE": "a"}, []string{"--auth=jwt"}},
		{"previous secret alone", []string{"--auth=jwt", "--jwt-previous-secret-file=/x", "--jwt-public-key-file=/y"}, nil, []string{"--jwt-previous-secret-file needs --jwt-secret-file"}},
		{"cert without key", []string{"--tls-cert-file=/c"}, nil, []string{"--tls-cert-file", "--tls-key-file"}},
		{"key without cert", []string{"--tls-key-file=/k"}, nil, []string{"--tls-cert-file", "--tls-key-file"}},
		{"admin token twice", []string{"--admin-token=a", "--admin-token-file=/dev/null"}, nil, []string{"--admin-token", "--admin-token-file"}},
		{"admin token file missing", []string{"--admin-token-file=/nonexistent/token"}, nil, []string{"admin-token-file", "/nonexistent/token"}},
		{"admin token file empty", []string{"--admin-token-file=/dev/null"}, nil, []string{"admin-token-file", "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Parse(tt.args, env(tt.env), io.Discard)
			if err == nil {
				t.Fatalf("Parse(%q, %v) = %+v, want an error", tt.args, tt.env, c)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestPingsOffAllowsZeroTimeout: with keepalive off, the ping timeout is
// irrelevant and may be 0.
func TestPingsOffAllowsZeroTimeout(t *testing.T) {
	t.Parallel()
	c := parse(t, []string{"--ping-interval=0", "--ping-timeout=0"}, nil)
	if c.Forward.PingInterval != 0 {
		t.Errorf("PingInterval = %v", c.Forward.PingInterval)
	}
}

// TestAdminTokenFile: the admin token is read from its file, white space
// trimmed, and the error for an unreadable one names the file, never content.
func TestAdminTokenFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(p, []byte("  from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := parse(t, nil, map[string]string{"PROXY_ADMIN_TOKEN_FILE": p})
	if c.AdminToken != "from-a-file" {
		t.Errorf("AdminToken = %q, want the file's", c.AdminToken)
	}
}
