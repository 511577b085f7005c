// Package config reads the proxy's settings from flags, with an environment
// variable for each flag (--send-queue-bytes is PROXY_SEND_QUEUE_BYTES).
// A flag given on the command line wins over its variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/internal/auth"
	"github.com/wsproxy/wsproxy/internal/forward"
	"github.com/wsproxy/wsproxy/internal/limits"
)

// Config is every setting of the proxy.
type Config struct {
	Addr            string
	LogLevel        string
	LogFormat       string // "json", "console", or "" for: console on a terminal
	ShutdownTimeout time.Duration
	AdminToken      string
	// MemoryLimit is --memory-limit: Go's soft memory limit, half of which
	// is the budget for messages (Forward.MemoryBudget). 0: no limit.
	MemoryLimit int64
	Forward     forward.Options

	// Identity and TLS (SPEC section 9). Parse reads the admin token file;
	// the key and certificate files are read by whoever uses them.
	Auth        string // "none" or "jwt"
	JWT         auth.Options
	TLSCertFile string
	TLSKeyFile  string

	// The cluster (SPEC section 12). NATSURL empty: a single node.
	NATSURL            string
	ClusterName        string
	NodeName           string
	ClusterHeartbeat   time.Duration
	ClusterPeerTimeout time.Duration
	BusChunkBytes      int
	BusWindowBytes     int
}

// ErrHelp is returned when --help was asked for; the usage has been printed.
var ErrHelp = flag.ErrHelp

// EnvName is the environment variable for a flag name.
func EnvName(flagName string) string {
	return "PROXY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse reads args (without the program name) and the environment through
// getenv. Usage and errors go to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	f := &c.Forward
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, for the caller to print last
	fs.Usage = func() {}     // printed for --help only, not before every error
	usage := func() {
		fmt.Fprintf(out, "Usage: proxy [flags]\n       proxy healthcheck [--url URL]\n       proxy --version\n"+
			"       proxy token --secret-file F --sub ID --groups 'room-*' [--ttl 1h]\n\n"+
			"A group-based WebSocket forwarder: clients connect to /ws?id=<id>&groupName=<group>\n"+
			"and every message reaches every other member of the group.\n\n"+
			"Every flag can also be set by its environment variable (shown in brackets);\n"+
			"a flag on the command line wins. Sizes take B, KiB, MiB, GiB suffixes.\n\nFlags:\n")
		fs.VisitAll(func(fl *flag.Flag) {
			def := fmt.Sprintf(" (default %q)", fl.DefValue)
			switch {
			case strings.Contains(fl.Usage, "(default"): // the usage explains it
				def = ""
			case fl.DefValue == "":
				def = " (default: none)"
			}
			fmt.Fprintf(out, "  --%s [%s]\n    \t%s%s\n", fl.Name, EnvName(fl.Name), fl.Usage, def)
		})
	}
	var origins string
	var policy string
	maxMsg, bufBytes, queueBytes := size(0), size(1<<20), size(8<<20)

	fs.StringVar(&c.Addr, "addr", ":8080", "listen address")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "", "log format: json or console (default: console on a terminal, json otherwise)")
	fs.Var(&maxMsg, "max-message-bytes", "largest message accepted; a sender going over is closed with 1009 (0: no limit)")
	fs.Var(&bufBytes, "buffer-bytes", "messages up to this size are held whole; larger ones are relayed as they arrive")
	fs.DurationVar(&f.MessageIdleTimeout, "message-idle-timeout", 30*time.Second, "close a sender whose message makes no progress this long (1008) (0: never)")
	fs.Var(&queueBytes, "send-queue-bytes", "outbound queue bound per connection")
	fs.StringVar(&policy, "slow-consumer", "backpressure", "when a receiver's queue is full: backpressure (sender waits) or disconnect (receiver closed)")
	fs.DurationVar(&f.WriteTimeout, "write-timeout", 10*time.Second, "close a receiver that accepts no bytes this long (1008) (0: never)")
	fs.DurationVar(&f.PingInterval, "ping-interval", 30*time.Second, "keepalive ping interval (0: no pings)")
	fs.DurationVar(&f.PingTimeout, "ping-timeout", 10*time.Second, "close a client that does not answer a ping this long")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long queued messages may take to be delivered")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated host patterns of browser origins allowed besides the proxy's own host (path.Match syntax, e.g. *.example.com)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "if set, /api/* requires 'Authorization: Bearer <token>'")

	// Limits (SPEC section 10) and the memory budget.
	memLimit := autoSize(-1)
	byteRate, byteBurst := size(0), size(0)
	var rateAction string
	fs.IntVar(&f.MaxGroups, "max-groups", 0, "most groups at once; a member that would create one more is closed with 1013 (0: no limit)")
	fs.IntVar(&f.MaxMembersPerGroup, "max-members-per-group", 0, "most members of one group; one more is closed with 1013 (0: no limit)")
	fs.Float64Var(&f.MessageRate, "message-rate", 0, "messages per second one connection may send (0: no limit)")
	fs.IntVar(&f.MessageBurst, "message-burst", 0, "messages a connection may send at once above --message-rate (default: one second's worth)")
	fs.Var(&byteRate, "byte-rate", "bytes per second one connection may send (0: no limit)")
	fs.Var(&byteBurst, "byte-burst", "bytes a connection may send at once above --byte-rate (default: one second's worth, at least 64KiB)")
	fs.StringVar(&rateAction, "rate-limit-action", "throttle", "over a rate: throttle (stop reading for a while) or close (1008 rate limited)")
	fs.Var(&memLimit, "memory-limit", "the process's memory limit: Go's soft limit, and half of it bounds what messages hold (0: none) (default: half of the machine's or container's memory)")
	// Connection admission (SPEC section 10; internal/limits): checked
	// before the upgrade, refused with 503 or 429 and Retry-After.
	adm := &f.Admission
	var trustedProxies string
	fs.IntVar(&adm.MaxConnections, "max-connections", limits.DefaultMaxConnections(),
		"open WebSocket connections, process-wide; over it 503 + Retry-After (0: no limit) "+
			"(default: derived from the descriptor limit: RLIMIT_NOFILE minus max(64, 10%), at most 100000)")
	fs.IntVar(&adm.MaxConnectionsPerIP, "max-connections-per-ip", 0,
		"open WebSocket connections per client address (IPv6: per /64); over it 429 + Retry-After (0: no limit)")
	fs.Float64Var(&adm.ConnectRatePerIP, "connect-rate-per-ip", 0,
		"new WebSocket connections per second per client address; over it 429 + Retry-After (0: no limit)")
	fs.IntVar(&adm.ConnectBurstPerIP, "connect-burst-per-ip", 0,
		"connections an address may open at once before --connect-rate-per-ip applies (0: the rate rounded up, at least 1)")
	fs.StringVar(&trustedProxies, "trusted-proxies", "",
		"comma-separated CIDRs or addresses of reverse proxies whose X-Forwarded-For names the client "+
			"(default: none: the socket's address is the client's)")

	// Identity and TLS (SPEC section 9; docs/security.md).
	var adminTokenFile, secretFile, prevSecretFile string
	fs.StringVar(&c.Auth, "auth", "none", "who may join: none (anyone who reaches the port, under any id) or jwt (a signed token binds id and groups)")
	fs.StringVar(&secretFile, "jwt-secret-file", "", "file holding the HMAC secret that signs tokens (HS256/384/512), at least 32 bytes")
	fs.StringVar(&prevSecretFile, "jwt-previous-secret-file", "", "file holding the previous HMAC secret, still accepted while tokens signed with it expire")
	fs.StringVar(&c.JWT.PublicKeyFile, "jwt-public-key-file", "", "file holding a PEM public key (RSA, ECDSA or Ed25519) that verifies tokens")
	fs.StringVar(&c.JWT.Audience, "jwt-audience", "", "if set, tokens must carry this aud")
	fs.StringVar(&c.JWT.Issuer, "jwt-issuer", "", "if set, tokens must carry this iss")
	fs.StringVar(&adminTokenFile, "admin-token-file", "", "file holding the admin token (instead of --admin-token)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM certificate (chain) to serve HTTPS and wss:// with; reloaded when it changes")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")

	// The cluster (SPEC section 12; package cluster).
	chunk, window := size(128<<10), size(1<<20)
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server(s) to share groups with the other proxies through, e.g. nats://nats:4222 (JetStream on) (empty: a single proxy, nothing else to run)")
	fs.StringVar(&c.ClusterName, "cluster-name", "wsproxy", "the cluster's name: proxies with the same --nats-url and name share groups")
	fs.StringVar(&c.NodeName, "node-name", "", "this proxy's name in the cluster (logs, the admin API) (default: the host name)")
	fs.DurationVar(&c.ClusterHeartbeat, "cluster-heartbeat", time.Second, "how often a proxy tells the others it is alive")
	fs.DurationVar(&c.ClusterPeerTimeout, "cluster-peer-timeout", 6*time.Second, "a proxy silent this long is lost: the members of groups it shared are closed with 4004")
	fs.Var(&chunk, "bus-chunk-bytes", "largest piece of a message on NATS (at most NATS's max_payload less 1KiB)")
	fs.Var(&window, "bus-window-bytes", "bytes of one group's messages in flight to another proxy; under backpressure a sender waits beyond it")

	src, err := parseFlags(fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		usage()
	}
	if err != nil {
		return nil, err
	}

	if f.SlowConsumer, err = forward.ParsePolicy(policy); err != nil {
		return nil, src.invalid("slow-consumer", err.Error())
	}
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if _, err := path.Match(o, ""); err != nil {
				return nil, src.invalid("allowed-origins", fmt.Sprintf("%q is not a valid pattern: want host patterns such as *.example.com (path.Match syntax)", o))
			}
			f.AllowedOrigins = append(f.AllowedOrigins, o)
		}
	}
	if f.Admission.TrustedProxies, err = limits.ParsePrefixes(trustedProxies); err != nil {
		return nil, src.invalid("trusted-proxies", err.Error())
	}
	f.MaxMessageBytes = int64(maxMsg)
	f.BufferBytes = int(bufBytes)
	f.SendQueueBytes = int64(queueBytes)
	f.CloseGrace = 2 * time.Second
	f.RateLimitClose = rateAction == "close" // checked against choices
	f.ByteRate, f.ByteBurst = float64(byteRate), int(min(int64(byteBurst), 1<<30))
	c.MemoryLimit = int64(memLimit)
	if memLimit < 0 {
		c.MemoryLimit = DefaultMemoryLimit()
	}
	f.MemoryBudget = c.MemoryLimit / 2
	c.BusChunkBytes, c.BusWindowBytes = int(min(int64(chunk), 1<<30)), int(min(int64(window), 1<<30))
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	if err := c.identity(secretFile, prevSecretFile, adminTokenFile); err != nil {
		return nil, src.name(err)
	}
	return c, src.name(c.validate())
}

// identity checks the identity and TLS settings and reads the admin token
// file.
func (c *Config) identity(secretFile, prevSecretFile, adminTokenFile string) error {
	for _, f := range []string{secretFile, prevSecretFile} {
		if f != "" {
			c.JWT.SecretFiles = append(c.JWT.SecretFiles, f)
		}
	}
	switch c.Auth {
	case "none":
		if len(c.JWT.SecretFiles) > 0 || c.JWT.PublicKeyFile != "" || c.JWT.Audience != "" || c.JWT.Issuer != "" {
			return errors.New("the --jwt-* flags need --auth=jwt (auth is none: anyone may join)")
		}
	case "jwt":
		if secretFile == "" && c.JWT.PublicKeyFile == "" {
			return errors.New("--auth=jwt needs --jwt-secret-file or --jwt-public-key-file")
		}
		if prevSecretFile != "" && secretFile == "" {
			return errors.New("--jwt-previous-secret-file needs --jwt-secret-file")
		}
	default:
		return errors.New("auth must be none or jwt")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if adminTokenFile != "" {
		if c.AdminToken != "" {
			return errors.New("set --admin-token or --admin-token-file, not both")
		}
		b, err := os.ReadFile(adminTokenFile)
		if err != nil {
			return fmt.Errorf("admin-token-file cannot be read: %w", err)
		}
		if c.AdminToken = strings.TrimSpace(string(b)); c.AdminToken == "" {
			return fmt.Errorf("admin-token-file %s is empty", adminTokenFile)
		}
	}
	return nil
}

// validate checks the settings together. Each error begins with the name of
// the flag at fault; Parse replaces it with what the user set (the flag or
// its variable).
func (c *Config) validate() error {
	f := c.Forward
	switch {
	case f.BufferBytes < 1<<10 || f.BufferBytes > 1<<30:
		return errors.New("buffer-bytes must be between 1KiB and 1GiB")
	case f.SendQueueBytes < 1<<10:
		return errors.New("send-queue-bytes must be at least 1KiB")
	case f.MaxMessageBytes < 0:
		return errors.New("max-message-bytes must not be negative")
	case f.MessageIdleTimeout < 0:
		return errors.New("message-idle-timeout must not be negative")
	case f.WriteTimeout < 0:
		return errors.New("write-timeout must not be negative")
	case f.PingInterval < 0:
		return errors.New("ping-interval must not be negative")
	case c.ShutdownTimeout < 0:
		return errors.New("shutdown-timeout must not be negative")
	case f.PingInterval > 0 && f.PingTimeout <= 0:
		return errors.New("ping-timeout must be positive when pings are on")
	case f.MaxGroups < 0:
		return errors.New("max-groups must not be negative")
	case f.MaxMembersPerGroup < 0:
		return errors.New("max-members-per-group must not be negative")
	case !(f.MessageRate >= 0) || math.IsInf(f.MessageRate, 0):
		return errors.New("message-rate must be a number of messages per second, 0 or more")
	case f.MessageBurst < 0:
		return errors.New("message-burst must not be negative")
	case c.MemoryLimit > 0 && f.MemoryBudget < 4*int64(f.BufferBytes):
		return errors.New("memory-limit must be at least 8 times buffer-bytes (half of it holds messages; a streamed one takes 3 times buffer-bytes)")
	case f.Admission.MaxConnections < 0:
		return errors.New("max-connections must not be negative")
	case f.Admission.MaxConnectionsPerIP < 0:
		return errors.New("max-connections-per-ip must not be negative")
	case !(f.Admission.ConnectRatePerIP >= 0) || math.IsInf(f.Admission.ConnectRatePerIP, 0):
		return errors.New("connect-rate-per-ip must be a number of connections per second, 0 or more")
	case f.Admission.ConnectBurstPerIP < 0:
		return errors.New("connect-burst-per-ip must not be negative")
	}
	return c.validateCluster()
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c *Config) validateCluster() error {
	switch {
	case !clusterName.MatchString(c.ClusterName):
		return fmt.Errorf("cluster-name %q: want 1-64 characters of A-Z a-z 0-9 _ -", c.ClusterName)
	case c.NATSURL != "" && c.NodeName == "":
		return errors.New("node-name must not be empty")
	case len(c.NodeName) > 128:
		return errors.New("node-name must be at most 128 bytes")
	case c.ClusterHeartbeat <= 0:
		return errors.New("cluster-heartbeat must be positive")
	case c.ClusterPeerTimeout < 2*c.ClusterHeartbeat:
		return errors.New("cluster-peer-timeout must be at least twice cluster-heartbeat")
	case c.BusChunkBytes < 1<<10:
		return errors.New("bus-chunk-bytes must be at least 1KiB")
	case c.BusWindowBytes < 2*c.BusChunkBytes:
		return errors.New("bus-window-bytes must be at least twice bus-chunk-bytes")
	case c.NATSURL != "" && c.Forward.WriteTimeout == 0 && c.Forward.SlowConsumer == forward.Backpressure:
		return errors.New("write-timeout must not be 0 with --nats-url under backpressure: a node that stops reading would hold its groups' senders forever")
	}
	return nil
}

// size is a byte count flag that accepts B, KiB, MiB and GiB suffixes.
type size int64

func (s *size) String() string { return FormatSize(int64(*s)) }

func (s *size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

var units = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}

// ParseSize parses a byte count such as 1048576, 1MiB or 64KiB.
func ParseSize(v string) (int64, error) {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, optionally with B, KiB, MiB or GiB", v)
	}
	return n * mult, nil
}

// FormatSize prints n with the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range units[:3] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
