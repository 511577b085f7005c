package config

import (
	"errors"
	"flag"
	"io"
	"testing"
	"time"
)

// customValue is a flag.Value of a type parseFlags does not know.
type customValue struct{}

func (customValue) String() string     { return "" }
func (customValue) Set(v string) error { return errors.New("want a colour, not " + v) }

// TestParseFlagsWants covers the value types the proxy's own flags do not
// use yet: each bad value says what is wanted, and a boolean flag still
// works without a value through the wrapper.
func TestParseFlagsWants(t *testing.T) {
	t.Parallel()
	newSet := func() (*flag.FlagSet, *bool) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		b := fs.Bool("tls", false, "")
		fs.Int("workers", 1, "")
		fs.Uint("copies", 1, "")
		fs.Float64("ratio", 1, "")
		fs.Duration("wait", time.Second, "")
		fs.Var(customValue{}, "colour", "")
		return fs, b
	}
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--tls=maybe"}, nil, `--tls="maybe": want true or false`},
		{nil, map[string]string{"PROXY_TLS": "yes"}, `PROXY_TLS="yes": want true or false`},
		{[]string{"--workers=many"}, nil, `--workers="many": want a whole number`},
		{[]string{"--copies=-1"}, nil, `--copies="-1": want a whole number, 0 or more`},
		{[]string{"--ratio=half"}, nil, `--ratio="half": want a number`},
		{[]string{"--wait=1"}, nil, `--wait="1": want a duration such as 10s or 1m30s`},
		{[]string{"--colour=red"}, nil, `--colour="red": want a colour, not red`},
	}
	for _, tt := range tests {
		fs, _ := newSet()
		_, err := parseFlags(fs, tt.args, func(k string) string { return tt.env[k] })
		if err == nil || err.Error() != tt.want {
			t.Errorf("parseFlags(%q, %v) = %v, want %s", tt.args, tt.env, err, tt.want)
		}
	}

	fs, tls := newSet()
	if _, err := parseFlags(fs, []string{"--tls", "--workers", "3"}, func(string) string { return "" }); err != nil || !*tls {
		t.Errorf("--tls without a value: err %v, tls %v", err, *tls)
	}
	if got := fs.Lookup("workers").Value.(flag.Getter).Get(); got != 3 {
		t.Errorf("workers = %v through the wrapper's Get, want 3", got)
	}
}
