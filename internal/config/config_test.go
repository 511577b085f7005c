package config_test

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/config"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/limits"
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
		MemoryLimit:     config.DefaultMemoryLimit(),
		Auth:            "none",
		// A single node; the cluster's defaults for when --nats-url is set.
		ClusterName:        "wsproxy",
		NodeName:           hostname(t),
		ClusterHeartbeat:   time.Second,
		ClusterPeerTimeout: 6 * time.Second,
		BusChunkBytes:      128 << 10,
		BusWindowBytes:     1 << 20,
		Forward: forward.Options{
			MemoryBudget:       config.DefaultMemoryLimit() / 2,
			MaxMessageBytes:    0,
			BufferBytes:        1 << 20,
			MessageIdleTimeout: 30 * time.Second,
			SendQueueBytes:     8 << 20,
			SlowConsumer:       forward.Backpressure,
			WriteTimeout:       10 * time.Second,
			PingInterval:       30 * time.Second,
			PingTimeout:        10 * time.Second,
			CloseGrace:         2 * time.Second,
			Admission:          limits.AdmitOptions{MaxConnections: limits.DefaultMaxConnections()},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
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
		// SPEC section 10.
		"max-groups":            "100",
		"max-members-per-group": "10",
		"message-rate":          "2.5",
		"message-burst":         "4",
		"byte-rate":             "1MiB",
		"byte-burst":            "2MiB",
		"rate-limit-action":     "close",
		"memory-limit":          "512MiB",
		// Connection admission.
		"max-connections":        "500",
		"max-connections-per-ip": "20",
		"connect-rate-per-ip":    "2.5",
		"connect-burst-per-ip":   "7",
		"trusted-proxies":        "10.0.0.0/8, 192.168.1.1,fd00::/8",
		// identity and TLS
		"auth":                     "jwt",
		"jwt-secret-file":          "/run/secrets/jwt",
		"jwt-previous-secret-file": "/run/secrets/jwt.old",
		"jwt-public-key-file":      "/run/secrets/jwt.pem",
		"jwt-audience":             "wsproxy",
		"jwt-issuer":               "https://id.example",
		"tls-cert-file":            "/etc/tls/cert.pem",
		"tls-key-file":             "/etc/tls/key.pem",
		// the cluster
		"nats-url":             "nats://nats:4222",
		"cluster-name":         "prod-eu",
		"node-name":            "proxy-7",
		"cluster-heartbeat":    "500ms",
		"cluster-peer-timeout": "3s",
		"bus-chunk-bytes":      "256KiB",
		"bus-window-bytes":     "4MiB",
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
		MemoryLimit:     512 << 20,
		Auth:            "jwt",
		JWT: auth.Options{
			SecretFiles:   []string{"/run/secrets/jwt", "/run/secrets/jwt.old"},
			PublicKeyFile: "/run/secrets/jwt.pem",
			Audience:      "wsproxy",
			Issuer:        "https://id.example",
		},
		TLSCertFile:        "/etc/tls/cert.pem",
		TLSKeyFile:         "/etc/tls/key.pem",
		NATSURL:            "nats://nats:4222",
		ClusterName:        "prod-eu",
		NodeName:           "proxy-7",
		ClusterHeartbeat:   500 * time.Millisecond,
		ClusterPeerTimeout: 3 * time.Second,
		BusChunkBytes:      256 << 10,
		BusWindowBytes:     4 << 20,
		Forward: forward.Options{
			MaxGroups:          100,
			MaxMembersPerGroup: 10,
			MessageRate:        2.5,
			MessageBurst:       4,
			ByteRate:           1 << 20,
			ByteBurst:          2 << 20,
			RateLimitClose:     true,
			MemoryBudget:       256 << 20,
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
			Admission: limits.AdmitOptions{
				MaxConnections:      500,
				MaxConnectionsPerIP: 20,
				ConnectRatePerIP:    2.5,
				ConnectBurstPerIP:   7,
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"),
					netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("fd00::/8")},
			},
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

// TestInvalid pins every error message a bad setting gets: each names the
// flag or variable as the user set it, and says what is wanted.
func TestInvalid(t *testing.T) {
	t.Parallel()
	const (
		duration = `want a duration such as 10s or 1m30s`
		sizeWant = `want a size such as 1048576, 64KiB or 8MiB`
		pattern  = `is not a valid pattern: want host patterns such as *.example.com (path.Match syntax)`
	)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the whole error
	}{
		{"unknown flag", []string{"--bogus"}, nil, `unknown flag --bogus`},
		{"unknown flag, one dash", []string{"-bogus=1"}, nil, `unknown flag --bogus`},
		{"flag without its value", []string{"--addr"}, nil, `--addr needs a value`},
		{"positional argument", []string{"serve"}, nil, `unexpected argument "serve" (flags start with --; proxy --help lists them)`},

		{"bad duration flag", []string{"--write-timeout=soon"}, nil, `--write-timeout="soon": ` + duration},
		{"duration without a unit", []string{"--ping-interval", "30"}, nil, `--ping-interval="30": ` + duration},
		{"bad duration env", nil, map[string]string{"PROXY_PING_INTERVAL": "often"}, `PROXY_PING_INTERVAL="often": ` + duration},
		{"bad size flag", []string{"--send-queue-bytes=lots"}, nil, `--send-queue-bytes="lots": ` + sizeWant},
		{"bad size env", nil, map[string]string{"PROXY_SEND_QUEUE_BYTES": "1.5MiB"}, `PROXY_SEND_QUEUE_BYTES="1.5MiB": ` + sizeWant},
		{"negative size", []string{"--max-message-bytes=-1"}, nil, `--max-message-bytes="-1": ` + sizeWant},

		{"bad cluster name", []string{"--cluster-name=a.b"}, nil, `--cluster-name: "a.b" is not a valid name: want 1-64 characters of A-Z a-z 0-9 _ -`},
		{"peer timeout under two heartbeats", []string{"--cluster-heartbeat=2s", "--cluster-peer-timeout=3s"}, nil, `--cluster-peer-timeout must be at least twice cluster-heartbeat`},
		{"bus window under two chunks", []string{"--bus-chunk-bytes=1MiB", "--bus-window-bytes=1MiB"}, nil, `--bus-window-bytes must be at least twice bus-chunk-bytes`},
		{"tiny bus chunk", nil, map[string]string{"PROXY_BUS_CHUNK_BYTES": "512"}, `PROXY_BUS_CHUNK_BYTES must be at least 1KiB`},
		{"cluster with no write timeout", []string{"--nats-url=nats://x:4222", "--write-timeout=0"}, nil, `--write-timeout must not be 0 with --nats-url under backpressure: a node that stops reading would hold its groups' senders forever`},

		{"bad policy flag", []string{"--slow-consumer=drop"}, nil, `--slow-consumer="drop": want backpressure or disconnect`},
		{"bad policy env", nil, map[string]string{"PROXY_SLOW_CONSUMER": "drop"}, `PROXY_SLOW_CONSUMER="drop": want backpressure or disconnect`},
		{"empty policy flag", []string{"--slow-consumer="}, nil, `--slow-consumer="": want backpressure or disconnect`},
		{"bad log format flag", []string{"--log-format=xml"}, nil, `--log-format="xml": want json or console`},
		{"bad log format env", nil, map[string]string{"PROXY_LOG_FORMAT": "text"}, `PROXY_LOG_FORMAT="text": want json or console`},
		{"bad log level flag", []string{"--log-level=loud"}, nil, `--log-level="loud": want debug, info, warn or error`},
		{"bad log level env", nil, map[string]string{"PROXY_LOG_LEVEL": "trace"}, `PROXY_LOG_LEVEL="trace": want debug, info, warn or error`},

		{"malformed origin pattern flag", []string{"--allowed-origins=ok.example.com,[a-"}, nil, `--allowed-origins: "[a-" ` + pattern},
		{"malformed origin pattern env", nil, map[string]string{"PROXY_ALLOWED_ORIGINS": `app\`}, `PROXY_ALLOWED_ORIGINS: "app\\" ` + pattern},

		{"buffer too small", []string{"--buffer-bytes=1023"}, nil, `--buffer-bytes must be between 1KiB and 1GiB`},
		{"buffer too large env", nil, map[string]string{"PROXY_BUFFER_BYTES": "2GiB"}, `PROXY_BUFFER_BYTES must be between 1KiB and 1GiB`},
		{"queue too small", []string{"--send-queue-bytes=512B"}, nil, `--send-queue-bytes must be at least 1KiB`},
		{"negative write timeout", []string{"--write-timeout=-1s"}, nil, `--write-timeout must not be negative`},
		{"negative idle timeout", []string{"--message-idle-timeout=-1s"}, nil, `--message-idle-timeout must not be negative`},
		{"negative ping interval env", nil, map[string]string{"PROXY_PING_INTERVAL": "-1s"}, `PROXY_PING_INTERVAL must not be negative`},
		{"negative shutdown timeout", []string{"--shutdown-timeout=-1s"}, nil, `--shutdown-timeout must not be negative`},
		{"zero ping timeout", []string{"--ping-timeout=0"}, nil, `--ping-timeout must be positive when pings are on`},
		{"negative ping timeout env", nil, map[string]string{"PROXY_PING_TIMEOUT": "-1s"}, `PROXY_PING_TIMEOUT must be positive when pings are on`},
		// The flag wins, so the flag is named even with the variable set.
		{"flag named over its variable", []string{"--write-timeout=-2s"}, map[string]string{"PROXY_WRITE_TIMEOUT": "-1s"}, `--write-timeout must not be negative`},
		// SPEC section 10.
		{"negative max groups", []string{"--max-groups=-1"}, nil, `--max-groups must not be negative`},
		{"negative max members", []string{"--max-members-per-group=-1"}, nil, `--max-members-per-group must not be negative`},
		{"negative message rate", []string{"--message-rate=-1"}, nil, `--message-rate must be a number of messages per second, 0 or more`},
		{"bad byte rate", []string{"--byte-rate=fast"}, nil, `--byte-rate="fast": want a size such as 1048576, 64KiB or 8MiB`},
		{"bad rate action", []string{"--rate-limit-action=drop"}, nil, `--rate-limit-action="drop": want throttle or close`},
		{"memory limit too small", []string{"--memory-limit=4MiB"}, nil, `--memory-limit must be at least 8 times buffer-bytes (half of it holds messages; a streamed one takes 3 times buffer-bytes)`},
		{"bad memory limit env", nil, map[string]string{"PROXY_MEMORY_LIMIT": "much"}, `PROXY_MEMORY_LIMIT="much": want auto or a size such as 512MiB or 4GiB`},
		{"negative max connections", []string{"--max-connections=-1"}, nil, `--max-connections must not be negative`},
		{"bad max connections", []string{"--max-connections=many"}, nil, `--max-connections="many": want a whole number`},
		{"negative per-ip connections", []string{"--max-connections-per-ip=-1"}, nil, `--max-connections-per-ip must not be negative`},
		{"negative connect rate", []string{"--connect-rate-per-ip=-0.5"}, nil, `--connect-rate-per-ip must be a number of connections per second, 0 or more`},
		{"NaN connect rate", []string{"--connect-rate-per-ip=NaN"}, nil, `--connect-rate-per-ip must be a number of connections per second, 0 or more`},
		{"infinite connect rate", []string{"--connect-rate-per-ip=Inf"}, nil, `--connect-rate-per-ip must be a number of connections per second, 0 or more`},
		{"negative connect burst", []string{"--connect-burst-per-ip=-3"}, nil, `--connect-burst-per-ip must not be negative`},
		{"malformed trusted proxy", []string{"--trusted-proxies=10.0.0.0/8,10.0.0.0/33"}, nil, `--trusted-proxies: "10.0.0.0/33" is not a CIDR (10.0.0.0/8) or an address`},
		{"hostname as trusted proxy env", nil, map[string]string{"PROXY_TRUSTED_PROXIES": "lb.example.com"}, `PROXY_TRUSTED_PROXIES: "lb.example.com" is not a CIDR (10.0.0.0/8) or an address`},
		// Identity and TLS.
		{"bad auth", []string{"--auth=basic"}, nil, `--auth="basic": want none or jwt`},
		{"jwt without a key", []string{"--auth=jwt"}, nil, `--auth=jwt needs --jwt-secret-file or --jwt-public-key-file`},
		{"key without jwt", []string{"--jwt-secret-file=/x"}, nil, `the --jwt-* flags need --auth=jwt (auth is none: anyone may join)`},
		{"audience without jwt", nil, map[string]string{"PROXY_JWT_AUDIENCE": "a"}, `the --jwt-* flags need --auth=jwt (auth is none: anyone may join)`},
		{"previous secret alone", []string{"--auth=jwt", "--jwt-previous-secret-file=/x", "--jwt-public-key-file=/y"}, nil, `--jwt-previous-secret-file needs --jwt-secret-file`},
		{"cert without key", []string{"--tls-cert-file=/c"}, nil, `--tls-cert-file and --tls-key-file go together`},
		{"key without cert", []string{"--tls-key-file=/k"}, nil, `--tls-cert-file and --tls-key-file go together`},
		{"admin token twice", []string{"--admin-token=a", "--admin-token-file=/dev/null"}, nil, `set --admin-token or --admin-token-file, not both`},
		{"admin token file missing", []string{"--admin-token-file=/nonexistent/token"}, nil, `--admin-token-file cannot be read: open /nonexistent/token: no such file or directory`},
		{"admin token file empty", []string{"--admin-token-file=/dev/null"}, nil, `--admin-token-file /dev/null is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			c, err := config.Parse(tt.args, env(tt.env), &out)
			if err == nil {
				t.Fatalf("Parse(%q, %v) = %+v, want an error", tt.args, tt.env, c)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q, %v) error\n got %s\nwant %s", tt.args, tt.env, err, tt.want)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error %q is not config.ErrInvalid", err)
			}
			if out.Len() > 0 {
				t.Errorf("Parse printed %q before returning the error; the caller prints the error alone", out.String())
			}
		})
	}
}

// TestUnknownVars: PROXY_* variables that no flag reads are listed; every
// flag's variable, the ones named as read elsewhere and other variables are
// not.
func TestUnknownVars(t *testing.T) {
	t.Parallel()
	environ := []string{
		"HOME=/root",
		"PROXY_ADDR=:9000",
		"PROXY_SEND_QUEUE_BYTE=2MiB", // a typo
		"PROXY_HEALTHCHECK_URL=http://127.0.0.1:9000/healthz",
		"PROXY_ADMIN_TOKEN=",
		"PROXY_ADMIN_TOKEN_FILE_X=1",
		"WSPROXY_PORT=9000",
		"PROXY_SEND_QUEUE_BYTE=4MiB", // listed once
	}
	got := config.UnknownVars(environ, "PROXY_HEALTHCHECK_URL")
	want := []string{"PROXY_SEND_QUEUE_BYTE", "PROXY_ADMIN_TOKEN_FILE_X"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("UnknownVars = %q, want %q", got, want)
	}
	// Every flag's variable is known.
	var all []string
	for _, name := range flagNames(t) {
		all = append(all, config.EnvName(name)+"=x")
	}
	if got := config.UnknownVars(all); len(got) != 0 {
		t.Errorf("UnknownVars calls flags' own variables unknown: %q", got)
	}
}

// flagNames lists the flags --help shows.
func flagNames(t *testing.T) []string {
	var out strings.Builder
	if _, err := config.Parse([]string{"--help"}, env(nil), &out); !errors.Is(err, config.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	var names []string
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			name, _, _ := strings.Cut(rest, " ")
			names = append(names, name)
		}
	}
	if len(names) < 14 {
		t.Fatalf("--help lists %d flags:\n%s", len(names), out.String())
	}
	return names
}

// TestPingsOffAllowsZeroTimeout: with keepalive off, the ping timeout is
// irrelevant and may be 0.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	if c := parse(t, []string{"--memory-limit=0"}, nil); c.MemoryLimit != 0 || c.Forward.MemoryBudget != 0 {
		t.Errorf("--memory-limit=0: limit %d, budget %d; want none", c.MemoryLimit, c.Forward.MemoryBudget)
	}
	if c := parse(t, []string{"--memory-limit=auto"}, nil); c.MemoryLimit != config.DefaultMemoryLimit() {
		t.Errorf("--memory-limit=auto: %d, want the default %d", c.MemoryLimit, config.DefaultMemoryLimit())
	}
	// The default is half of what this machine (or container) has.
	if d := config.DefaultMemoryLimit(); d < 32<<20 || d > 1<<50 {
		t.Errorf("DefaultMemoryLimit() = %d", d)
	}
}

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
