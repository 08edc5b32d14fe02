// Package identity verifies the signed identity tokens an operator may
// require on the WebSocket upgrade: JSON Web Tokens signed with a shared
// HMAC secret or with a key of a JSON Web Key Set fetched from a URL. A
// verified token names the person; the edge then takes their display name
// from it instead of from the join frame.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Config says which tokens are accepted. Exactly one of HMACSecret and
// JWKSURL is set when identity is required.
type Config struct {
	HMACSecret []byte // HS256, HS384 or HS512
	JWKSURL    string // RS*, PS*, ES* or EdDSA, keys chosen by "kid"
	Issuer     string // the "iss" a token must carry, if set
	Audience   string // one of the token's "aud", if set
	NameClaim  string // the claim holding the display name (default "name")
	// Client fetches the key set (default: a client with a 10 s timeout).
	Client *http.Client
}

// Required reports whether the configuration asks for identity tokens.
func (c Config) Required() bool { return len(c.HMACSecret) > 0 || c.JWKSURL != "" }

// Identity is who a verified token names.
type Identity struct {
	Subject string // "sub"
	Name    string // the name claim, normalised by the name rules
}

// Leeway is the clock difference allowed between the token's issuer and
// the edge.
const Leeway = 30 * time.Second

// keySetRefresh is how often the key set is fetched again; a token with a
// key ID not in it asks for a fetch at most once per keySetRetry.
const (
	keySetRefresh = 10 * time.Minute
	keySetRetry   = 30 * time.Second
)

// Verifier checks tokens against a Config.
type Verifier struct {
	cfg  Config
	algs []jose.SignatureAlgorithm

	mu       sync.Mutex // never held across a fetch
	keys     jose.JSONWebKeySet
	fetched  time.Time     // of the last successful fetch
	tried    time.Time     // of the last fetch tried
	fetching chan struct{} // closed when the fetch under way ends; nil: none
	fetchErr error         // of the last fetch
}

// New checks cfg and returns its Verifier.
func New(cfg Config) (*Verifier, error) {
	switch {
	case len(cfg.HMACSecret) > 0 && cfg.JWKSURL != "":
		return nil, errors.New("identity: set an HMAC secret or a JWKS URL, not both")
	case len(cfg.HMACSecret) > 0 && len(cfg.HMACSecret) < 32:
		return nil, fmt.Errorf("identity: the HMAC secret is %d bytes; at least 32 are needed", len(cfg.HMACSecret))
	case !cfg.Required():
		return nil, errors.New("identity: neither an HMAC secret nor a JWKS URL is set")
	}
	if cfg.NameClaim == "" {
		cfg.NameClaim = "name"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	v := &Verifier{cfg: cfg}
	if len(cfg.HMACSecret) > 0 {
		v.algs = []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}
	} else {
		// Never an HMAC algorithm with a public key: a token "signed" with
		// the public key as an HMAC secret would pass.
		v.algs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
			jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}
	}
	return v, nil
}

// refused is the error every bad token gets: the reason for the person,
// the details for nobody.
func refused(format string, args ...any) error {
	return protocol.Errorf(protocol.CodeUnauthorized, format, args...)
}

// Verify checks a token and returns who it names, or an unauthorized
// error saying what is wrong with it.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, refused("an identity token is required")
	}
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil || len(tok.Headers) != 1 {
		return Identity{}, refused("the identity token is malformed or signed with an algorithm not accepted here")
	}
	key, err := v.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return Identity{}, err
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(key, &std, &all); err != nil {
		return Identity{}, refused("the identity token's signature does not verify")
	}
	if std.Expiry == nil {
		return Identity{}, refused("the identity token has no expiry")
	}
	exp := jwt.Expected{Issuer: v.cfg.Issuer, Time: time.Now()}
	if v.cfg.Audience != "" {
		exp.AnyAudience = jwt.Audience{v.cfg.Audience}
	}
	switch err := std.ValidateWithLeeway(exp, Leeway); {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, refused("the identity token has expired")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Identity{}, refused("the identity token is not valid yet")
	case err != nil:
		return Identity{}, refused("the identity token is not for this service (issuer or audience)")
	}
	raw, _ := all[v.cfg.NameClaim].(string)
	name, err := protocol.NormalizeName(raw)
	if err != nil {
		return Identity{}, refused("the identity token's %q claim is not a valid name", v.cfg.NameClaim)
	}
	return Identity{Subject: std.Subject, Name: name}, nil
}

// key returns the key that verifies a token with key ID kid.
//
// The key set is fetched by one goroutine at a time, without the lock: a
// slow or unreachable identity provider never holds up a token whose key
// is known. A stale set's key serves while the set is fetched again; only
// a token whose key is not known waits for the fetch, within its context.
func (v *Verifier) key(ctx context.Context, kid string) (any, error) {
	if len(v.cfg.HMACSecret) > 0 {
		return v.cfg.HMACSecret, nil
	}
	v.mu.Lock()
	now := time.Now()
	found := v.lookupLocked(kid)
	stale := now.Sub(v.fetched) > keySetRefresh
	var wait chan struct{}
	if (found == nil || stale) && (v.fetching != nil || now.Sub(v.tried) > keySetRetry) {
		if v.fetching == nil {
			v.tried, v.fetching = now, make(chan struct{})
			go v.fetch(v.fetching)
		}
		wait = v.fetching
	}
	v.mu.Unlock()
	if found != nil {
		return found, nil
	}
	if wait == nil {
		return nil, refused("the identity token's key is not known")
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w (%w)", protocol.Errorf(protocol.CodeUnavailable, "the identity keys could not be fetched in time; try again"), ctx.Err())
	}
	v.mu.Lock()
	found, err := v.lookupLocked(kid), v.fetchErr
	v.mu.Unlock()
	switch {
	case found != nil:
		return found, nil
	case err != nil:
		return nil, fmt.Errorf("%w (%w)", protocol.Errorf(protocol.CodeUnavailable, "the identity keys could not be fetched; try again"), err)
	}
	return nil, refused("the identity token's key is not known")
}

// fetch fetches the key set, keeps it (the last one stays if it fails),
// and closes done.
func (v *Verifier) fetch(done chan struct{}) {
	set, err := v.get()
	v.mu.Lock()
	if err == nil {
		v.keys, v.fetched = set, time.Now()
	}
	v.fetchErr, v.fetching = err, nil
	v.mu.Unlock()
	close(done)
}

func (v *Verifier) lookupLocked(kid string) any {
	var keys []jose.JSONWebKey
	if kid != "" {
		keys = v.keys.Key(kid)
	} else if len(v.keys.Keys) == 1 {
		keys = v.keys.Keys
	}
	for _, k := range keys {
		if k.Use == "" || k.Use == "sig" {
			return k.Public().Key
		}
	}
	return nil
}

// fetchTimeout bounds one fetch of the key set.
const fetchTimeout = 10 * time.Second

// get fetches the key set.
func (v *Verifier) get() (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return set, fmt.Errorf("identity: key set request: %w", err)
	}
	resp, err := v.cfg.Client.Do(req)
	if err != nil {
		return set, fmt.Errorf("identity: fetch key set: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return set, fmt.Errorf("identity: fetch key set: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return set, fmt.Errorf("identity: decode key set: %w", err)
	}
	return set, nil
}
