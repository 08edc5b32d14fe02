// Package config reads typed settings from the environment (12-factor) and
// collects every problem at once, so an operator sees all mistakes in one go.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/buddytok/buddytok/pkg/requestid"
)

// Env reads variables through Lookup (os.LookupEnv by default) and remembers
// the errors it meets.
type Env struct {
	Lookup func(string) (string, bool)
	errs   []error
	read   []setting // every variable read, in order, once
}

// setting is one variable as the process uses it.
type setting struct {
	key, value string
	set        bool // from the environment, not the default
	secret     bool
}

// FromOS returns an Env that reads the process environment.
func FromOS() *Env { return &Env{Lookup: os.LookupEnv} }

// FromMap returns an Env that reads m (for tests).
func FromMap(m map[string]string) *Env {
	return &Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func (e *Env) get(key string) (string, bool) {
	v, ok := e.Lookup(key)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// note records what key's setting is: v when set, else def.
func (e *Env) note(key string, v string, set bool, def any, secret bool) {
	for _, s := range e.read {
		if s.key == key {
			return
		}
	}
	if !set {
		v = fmt.Sprint(def)
	}
	e.read = append(e.read, setting{key: key, value: v, set: set, secret: secret})
}

// String returns the variable or def when it is unset or empty.
func (e *Env) String(key, def string) string {
	v, ok := e.get(key)
	e.note(key, v, ok, def, false)
	if ok {
		return v
	}
	return def
}

// Secret is String for a value that must never be shown: the effective
// configuration says only whether it is set. KEY_FILE may name a file that
// holds the value instead (a Docker or Kubernetes secret mounted as a
// file); its surrounding white space is ignored. Both set is an error.
func (e *Env) Secret(key string) string {
	v, ok := e.get(key)
	path, fromFile := e.get(key + "_FILE")
	if fromFile {
		e.note(key+"_FILE", path, true, "", false)
	}
	switch {
	case ok && fromFile:
		e.Fail("%s and %s_FILE are both set: keep one", key, key)
	case fromFile:
		data, err := os.ReadFile(path)
		if err != nil {
			e.Fail("%s_FILE: %v", key, err)
			break
		}
		if v, ok = strings.TrimSpace(string(data)), true; v == "" {
			e.Fail("%s_FILE: %s is empty", key, path)
		}
	}
	e.note(key, v, ok, "", true)
	return v
}

// Effective returns every setting read so far, for the log line a process
// writes at start: each variable with its value and whether it came from
// the environment or is the default; a secret shows only whether it is
// set.
func (e *Env) Effective() slog.Attr {
	attrs := make([]any, 0, len(e.read))
	for _, s := range e.read {
		v := s.value
		switch {
		case s.secret && s.set:
			v = "(set, not shown)"
		case s.secret:
			v = "(not set)"
		case !s.set && v == "":
			v = "(not set)"
		case !s.set:
			v += " (default)"
		default:
			v = RedactURLs(v)
		}
		attrs = append(attrs, slog.String(s.key, v))
	}
	return slog.Group("config", attrs...)
}

// Int returns the variable as an integer within [min, max], or def.
func (e *Env) Int(key string, def, min, max int) int {
	v, ok := e.get(key)
	e.note(key, v, ok, def, false)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want a whole number from %d to %d", key, v, min, max))
		return def
	}
	return n
}

// Duration returns the variable as a Go duration ("5s", "250ms") within
// [min, max], or def.
func (e *Env) Duration(key string, def, min, max time.Duration) time.Duration {
	v, ok := e.get(key)
	e.note(key, v, ok, def, false)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < min || d > max {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: want a duration from %s to %s, like 5s", key, v, min, max))
		return def
	}
	return d
}

// List returns a comma-separated variable as trimmed, non-empty items.
func (e *Env) List(key string) []string {
	v, ok := e.get(key)
	e.note(key, v, ok, "", false)
	if !ok {
		return nil
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Fail records a problem found while validating the settings.
func (e *Env) Fail(format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf(format, args...))
}

// Err returns every problem met so far, joined, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %w", errors.Join(e.errs...))
}

// The settings of the process logger.
var (
	logLevel  = String("LOG_LEVEL", "info", "all", "`debug`, `info`, `warn`, `error`")
	logFormat = String("LOG_FORMAT", "json", "all", "`json` (one object a line) or `text` (for people)")
)

// Logger returns the process logger: JSON lines on stderr (LOG_FORMAT=text
// for people), at LOG_LEVEL (debug, info, warn, error; default info).
func (e *Env) Logger() *slog.Logger {
	var level slog.Level
	if v := logLevel.Read(e); level.UnmarshalText([]byte(v)) != nil {
		e.Fail("LOG_LEVEL=%q: want debug, info, warn or error", v)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := logFormat.Read(e); f {
	case "json":
		return slog.New(requestid.Handler(slog.NewJSONHandler(os.Stderr, opts)))
	case "text":
		return slog.New(requestid.Handler(slog.NewTextHandler(os.Stderr, opts)))
	default:
		e.Fail("LOG_FORMAT=%q: want json or text", f)
		return slog.New(requestid.Handler(slog.NewJSONHandler(os.Stderr, opts)))
	}
}

// RedactURLs hides the password of every URL in a comma-separated value
// (nats://user:password@host), for logs and error messages.
func RedactURLs(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
