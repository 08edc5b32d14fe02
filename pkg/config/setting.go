package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Setting is one environment variable a BuddyTok process reads, declared
// once with its name, default, meaning and parser (the typed declarations
// below). Everything else about it derives from that declaration: the
// loader reads it through the declaration, the effective-configuration log
// names what the loader read, and docs/operations.md's table of settings
// is generated from Declared (a test fails when the page, docker-compose.yml
// or the Kubernetes manifests disagree with it).
type Setting struct {
	Name string
	// Default is the default as the settings table shows it: the typed
	// default (a literal), unless DefaultShown says how it is found.
	Default string
	// DefaultIsProse reports that Default says how the default is found
	// rather than being one.
	DefaultIsProse bool
	// Users are the processes that read it: edge, presence, invites,
	// tokens, all-in-one; "all" for every one.
	Users string
	// Meaning says what it does, for the settings table (Markdown).
	Meaning string
	// Secret settings are never shown, and may be given in a file named
	// by NAME_FILE instead.
	Secret bool
	// Deployed settings must be given to every service a deployment
	// (docker-compose.yml, the Kubernetes manifests) runs: their defaults
	// only make sense on one machine.
	Deployed bool
}

var (
	declaredMu sync.Mutex
	declared   []Setting
)

// declare records s; a name declared twice is a programming error.
func declare(s Setting) Setting {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	for _, d := range declared {
		if d.Name == s.Name {
			panic("config: " + s.Name + " declared twice")
		}
	}
	declared = append(declared, s)
	return s
}

// Declared returns every setting the packages linked into this program
// declared, sorted by name.
func Declared() []Setting {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	out := slices.Clone(declared)
	slices.SortFunc(out, func(a, b Setting) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the declared setting named name.
func Lookup(name string) (Setting, bool) {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	for _, d := range declared {
		if d.Name == name {
			return d, true
		}
	}
	return Setting{}, false
}

// Option adjusts a declaration.
type Option func(*Setting)

// DefaultShown is how the settings table shows a default that the typed
// one does not say (found at start, different per process).
func DefaultShown(s string) Option {
	return func(st *Setting) { st.Default, st.DefaultIsProse = s, true }
}

// Deployed marks a setting that every deployed service must be given.
func Deployed() Option { return func(st *Setting) { st.Deployed = true } }

func settingOf(name, def, users, meaning string, opts []Option) Setting {
	s := Setting{Name: name, Default: def, Users: users, Meaning: meaning}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// IntSetting is a whole-number setting within [Min, Max].
type IntSetting struct {
	Setting
	Def, Min, Max int
}

// Int declares a whole-number setting.
func Int(name string, def, min, max int, users, meaning string, opts ...Option) IntSetting {
	return IntSetting{Setting: declare(settingOf(name, strconv.Itoa(def), users, meaning, opts)), Def: def, Min: min, Max: max}
}

// Read reads the setting from env.
func (s IntSetting) Read(env *Env) int { return env.Int(s.Name, s.Def, s.Min, s.Max) }

// DurationSetting is a duration setting within [Min, Max].
type DurationSetting struct {
	Setting
	Def, Min, Max time.Duration
}

// Duration declares a duration setting.
func Duration(name string, def, min, max time.Duration, users, meaning string, opts ...Option) DurationSetting {
	return DurationSetting{Setting: declare(settingOf(name, shownDuration(def), users, meaning, opts)), Def: def, Min: min, Max: max}
}

// Read reads the setting from env.
func (s DurationSetting) Read(env *Env) time.Duration {
	return env.Duration(s.Name, s.Def, s.Min, s.Max)
}

// shownDuration is d as an operator writes it: 1m, not 1m0s.
func shownDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// StringSetting is a free-form setting.
type StringSetting struct {
	Setting
	Def string
}

// String declares a free-form setting.
func String(name, def, users, meaning string, opts ...Option) StringSetting {
	return StringSetting{Setting: declare(settingOf(name, def, users, meaning, opts)), Def: def}
}

// Read reads the setting from env.
func (s StringSetting) Read(env *Env) string { return env.String(s.Name, s.Def) }

// ReadOr reads the setting from env, with def as the default: for a
// process whose default differs (the all-in-one's), as DefaultShown says.
func (s StringSetting) ReadOr(env *Env, def string) string { return env.String(s.Name, def) }

// ListSetting is a comma-separated list.
type ListSetting struct{ Setting }

// List declares a comma-separated list setting.
func List(name, users, meaning string, opts ...Option) ListSetting {
	return ListSetting{Setting: declare(settingOf(name, "", users, meaning, opts))}
}

// Read reads the setting from env.
func (s ListSetting) Read(env *Env) []string { return env.List(s.Name) }

// SecretSetting is a value never shown (Env.Secret).
type SecretSetting struct{ Setting }

// Secret declares a secret setting.
func Secret(name, users, meaning string, opts ...Option) SecretSetting {
	s := settingOf(name, "", users, meaning, opts)
	s.Secret = true
	return SecretSetting{Setting: declare(s)}
}

// Read reads the setting from env (or from the file NAME_FILE names).
func (s SecretSetting) Read(env *Env) string { return env.Secret(s.Name) }
