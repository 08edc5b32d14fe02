// Package opentok is BuddyTok's own implementation of the OpenTok (Vonage
// Video API) server protocol: client tokens (T1 and HS256 JWT), the
// session-ID ownership check, and session creation over REST. It follows
// docs/opentok-protocol.md, which is distilled from the official SDKs, and
// is tested against their vectors. No OpenTok Go SDK is used.
//
// The API secret is held only inside Client; it never appears in an error,
// and Config's String masks it.
package opentok

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultAPIURL is OpenTok's REST endpoint.
const DefaultAPIURL = "https://api.opentok.com"

// Config configures a Client.
type Config struct {
	APIKey    string        // the project's API key (digits)
	APISecret string        // the project's API secret (40 hex characters)
	APIURL    string        // REST base URL; default DefaultAPIURL
	TokenType TokenType     // default TokenT1
	Timeout   time.Duration // per REST attempt; default 10 s
	Retries   int           // extra attempts after a 5xx or network error; default 2
	// HTTPClient overrides the HTTP client (its Timeout is then its own).
	HTTPClient *http.Client
}

// String shows the configuration with the secret masked.
func (c Config) String() string {
	return fmt.Sprintf("opentok.Config{APIKey:%s APISecret:%s APIURL:%s TokenType:%s}",
		c.APIKey, maskSecret(c.APISecret), c.APIURL, c.TokenType)
}

func maskSecret(s string) string {
	if s == "" {
		return `""`
	}
	return fmt.Sprintf("****(%d chars)", len(s))
}

// Configuration errors.
var (
	ErrMissingCredentials = errors.New("opentok: API key and API secret must both be set")
	ErrBadAPIKey          = errors.New("opentok: API key must be digits")
	ErrBadAPISecret       = errors.New("opentok: API secret must be 40 hexadecimal characters")
	ErrBadAPIURL          = errors.New("opentok: API URL must be an absolute http(s) URL")
	ErrBadTokenType       = errors.New("opentok: token type must be t1 or jwt")
)

// Client talks the OpenTok server protocol for one project.
type Client struct {
	apiKey    string
	secret    string
	baseURL   *url.URL
	tokenType TokenType
	http      *http.Client
	retries   int
	now       func() time.Time
	nonce     func() int64
}

// NewClient validates cfg and returns a Client. Errors never contain the
// secret.
func NewClient(cfg Config) (*Client, error) {
	var errs []error
	switch {
	case cfg.APIKey == "" || cfg.APISecret == "":
		errs = append(errs, ErrMissingCredentials)
	default:
		if strings.Trim(cfg.APIKey, "0123456789") != "" {
			errs = append(errs, ErrBadAPIKey)
		}
		if !isHex40(cfg.APISecret) {
			errs = append(errs, fmt.Errorf("%w (got %d characters)", ErrBadAPISecret, len(cfg.APISecret)))
		}
	}
	raw := cfg.APIURL
	if raw == "" {
		raw = DefaultAPIURL
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		errs = append(errs, fmt.Errorf("%w: %q", ErrBadAPIURL, raw))
	}
	tt := cfg.TokenType
	if tt == "" {
		tt = TokenT1
	}
	if tt != TokenT1 && tt != TokenJWT {
		errs = append(errs, fmt.Errorf("%w: %q", ErrBadTokenType, tt))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		hc = &http.Client{Timeout: timeout}
	}
	retries := cfg.Retries
	if retries < 0 {
		retries = 0
	} else if retries == 0 {
		retries = 2
	}
	return &Client{
		apiKey: cfg.APIKey, secret: cfg.APISecret, baseURL: base, tokenType: tt,
		http: hc, retries: retries, now: time.Now, nonce: randomNonce,
	}, nil
}

// APIKey is the project's public API key, which browsers need.
func (c *Client) APIKey() string { return c.apiKey }

func isHex40(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i] | 0x20 // lower-case letters; digits are unchanged
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return false
		}
	}
	return true
}

func randomNonce() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 34) // 30 bits, positive
}

// newJTI returns a random UUID v4 string.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
