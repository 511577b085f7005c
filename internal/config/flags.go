package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// choices lists the values a string flag accepts. A value set for one of
// these flags (on the command line or in its variable) that is not listed is
// refused with an error naming the flag or variable and the values allowed.
var choices = map[string][]string{
	"log-level":         {"debug", "info", "warn", "error"},
	"log-format":        {"json", "console"},
	"slow-consumer":     {"backpressure", "disconnect"},
	"rate-limit-action": {"throttle", "close"},
	"auth":              {"none", "jwt"},
}

// ErrInvalid matches (errors.Is) every error Parse returns for a bad setting.
var ErrInvalid = errors.New("invalid setting")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// sources records where each flag that was given a value got it, to name it
// in errors as the user wrote it: "--write-timeout" for the command line,
// "PROXY_WRITE_TIMEOUT" for the environment.
type sources struct {
	names []string          // every flag's name
	from  map[string]string // flag name -> "--name" or "PROXY_NAME", for flags set
}

// of is how the user set flag name (its flag, if it was not set at all).
func (s sources) of(name string) string {
	if v, ok := s.from[name]; ok {
		return v
	}
	return "--" + name
}

// invalid is an error about flag name: msg follows the flag or variable.
func (s sources) invalid(name, msg string) error {
	return &invalidError{s.of(name) + ": " + msg}
}

// badValue is an error about the value v given to flag name.
func (s sources) badValue(name, v, want string) error {
	return &invalidError{fmt.Sprintf("%s=%q: %s", s.of(name), v, want)}
}

// name rewrites an error that begins with a flag's name (as validate's do)
// to begin with the flag or variable the user set.
func (s sources) name(err error) error {
	if err == nil {
		return nil
	}
	msg, best := err.Error(), ""
	for _, n := range s.names {
		if strings.HasPrefix(msg, n+" ") && len(n) > len(best) {
			best = n
		}
	}
	if best == "" {
		return &invalidError{msg}
	}
	return &invalidError{s.of(best) + msg[len(best):]}
}

// value wraps a flag's Value so that a bad value is reported with what is
// wanted ("want a duration such as 10s or 1m30s") instead of the flag
// package's "parse error", and so that Parse can name where it came from.
type value struct {
	flag.Value
	name   string
	want   string   // what a good value looks like; "" keeps the Value's own error
	failed *failure // the first Set that failed, shared by a flag set's values
}

type failure struct{ name, value, msg string }

func (v *value) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	msg := err.Error()
	if v.want != "" {
		msg = "want " + v.want
	}
	if *v.failed == (failure{}) {
		*v.failed = failure{v.name, s, msg}
	}
	return errors.New(msg)
}

// IsBoolFlag keeps boolean flags usable without a value (--flag).
func (v *value) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Get keeps flag.Getter working through the wrapper.
func (v *value) Get() any {
	if g, ok := v.Value.(flag.Getter); ok {
		return g.Get()
	}
	return v.Value.String()
}

// want says what a good value of v looks like, by its type.
func want(v flag.Value) string {
	switch v.(type) {
	case *size:
		return "a size such as 1048576, 64KiB or 8MiB"
	case *autoSize:
		return "auto or a size such as 512MiB or 4GiB"
	}
	g, ok := v.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration such as 10s or 1m30s"
	case bool:
		return "true or false"
	case int, int64:
		return "a whole number"
	case uint, uint64:
		return "a whole number, 0 or more"
	case float64:
		return "a number"
	}
	return ""
}

// parseFlags parses args into fs, then sets each flag not given on the
// command line from its variable (read through getenv), and checks the
// flags of choices. Every error it returns names the flag or variable at
// fault; flag.ErrHelp is returned as it is.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (sources, error) {
	src := sources{from: map[string]string{}}
	var failed failure
	fs.VisitAll(func(fl *flag.Flag) {
		src.names = append(src.names, fl.Name)
		fl.Value = &value{Value: fl.Value, name: fl.Name, want: want(fl.Value), failed: &failed}
	})

	err := fs.Parse(args)
	fs.Visit(func(fl *flag.Flag) { src.from[fl.Name] = "--" + fl.Name })
	switch {
	case errors.Is(err, flag.ErrHelp):
		return src, err
	case err != nil && failed != (failure{}):
		return src, src.badValue(failed.name, failed.value, failed.msg)
	case err != nil:
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = "unknown flag --" + name
		} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
			msg = "--" + name + " needs a value"
		}
		return src, &invalidError{msg}
	case fs.NArg() > 0:
		return src, &invalidError{fmt.Sprintf("unexpected argument %q (flags start with --; proxy --help lists them)", fs.Arg(0))}
	}

	fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || src.from[fl.Name] != "" {
			return
		}
		name := EnvName(fl.Name)
		if v := getenv(name); v != "" {
			src.from[fl.Name] = name
			if e := fl.Value.Set(v); e != nil {
				err = src.badValue(fl.Name, v, e.Error())
			}
		}
	})
	if err != nil {
		return src, err
	}

	for _, name := range src.names {
		allowed, ok := choices[name]
		if !ok || src.from[name] == "" {
			continue
		}
		if v := fs.Lookup(name).Value.String(); !slices.Contains(allowed, v) {
			return src, src.badValue(name, v, "want "+orList(allowed))
		}
	}
	return src, nil
}

// orList is "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// UnknownVars returns the PROXY_* variables of environ (os.Environ's
// "NAME=value" form) that no flag reads, except those named in others (read
// by something else), in the order given.
func UnknownVars(environ []string, others ...string) []string {
	known := map[string]bool{}
	for _, o := range others {
		known[o] = true
	}
	// Parse with nothing set looks up every flag's variable.
	_, _ = Parse(nil, func(name string) string { known[name] = true; return "" }, io.Discard)
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PROXY_") && !known[name] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	return unknown
}
