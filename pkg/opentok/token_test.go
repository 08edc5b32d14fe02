package opentok

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fixtures from the official SDKs' tests (docs/opentok-protocol.md §5).
const (
	fixtureKey     = "123456"
	fixtureSecret  = "1234567890abcdef1234567890abcdef1234567890"
	fixtureSession = "1_MX4xMjM0NTZ-flNhdCBNYXIgMTUgMTQ6NDI6MjMgUERUIDIwMTR-MC40OTAxMzAyNX4"
)

// fixtureClient is a Client for the §5 key whose clock and nonce are fixed.
// The fixture secret is 42 characters, longer than a real one, so the
// client is built directly rather than through NewClient's validation.
func fixtureClient(now time.Time, nonce int64) *Client {
	return &Client{
		apiKey: fixtureKey, secret: fixtureSecret, tokenType: TokenT1,
		now: func() time.Time { return now }, nonce: func() int64 { return nonce },
	}
}

// §5.1: the official encoder's known token, byte for byte.
func TestEncodeT1OfficialVector(t *testing.T) {
	t.Parallel()
	got := EncodeT1(fixtureKey, fixtureSecret, []Field{
		{"session_id", fixtureSession},
		{"create_time", "1424221013"},
		{"nonce", "0.3942609881050885"},
		{"role", "moderator"},
		{"expire_time", "1424307413"},
		{"connection_data", `{"name":"value"}`},
	})
	const want = "T1==cGFydG5lcl9pZD0xMjM0NTYmc2lnPWRmOTRhNjQ1NTlhY2MwNjFkN2EzNzUyYTZmYzY5NDkzZTkzOGMxOTE6c2Vzc2lvbl9pZD0xX01YNHhNak0wTlRaLWZsTmhkQ0JOWVhJZ01UVWdNVFE2TkRJNk1qTWdVRVJVSURJd01UUi1NQzQwT1RBeE16QXlOWDQmY3JlYXRlX3RpbWU9MTQyNDIyMTAxMyZub25jZT0wLjM5NDI2MDk4ODEwNTA4ODUmcm9sZT1tb2RlcmF0b3ImZXhwaXJlX3RpbWU9MTQyNDMwNzQxMyZjb25uZWN0aW9uX2RhdGE9JTdCJTIybmFtZSUyMiUzQSUyMnZhbHVlJTIyJTdE"
	if got != want {
		t.Fatalf("EncodeT1 =\n%s\nwant\n%s", got, want)
	}
}

// §5.2: the Go SDK's data string and signature (sorted keys).
func TestSignT1GoSDKVector(t *testing.T) {
	t.Parallel()
	data := "connection_data=foo%3Dbar&create_time=1577865600&expire_time=1577865600&initial_layout_class_list=&nonce=0.49893371771268225&role=publisher&session_id=1_MX40MDAwMDAwMX5-MTU3Nzg2NTYwMDAwMH54N2I0OE1RZ0RmK1lRRnFQUWg4dlZmT0t-QX4"
	if got := signT1("<your api secret here>", data); got != "2b4239d658a5dba44da0c22e39061c9eb5845115" {
		t.Fatalf("sig = %s", got)
	}
	// EncodeT1 with the same fields in sorted order signs the same bytes.
	tok := EncodeT1("<your api key here>", "<your api secret here>", []Field{
		{"connection_data", "foo=bar"}, {"create_time", "1577865600"}, {"expire_time", "1577865600"},
		{"initial_layout_class_list", ""}, {"nonce", "0.49893371771268225"}, {"role", "publisher"},
		{"session_id", "1_MX40MDAwMDAwMX5-MTU3Nzg2NTYwMDAwMH54N2I0OE1RZ0RmK1lRRnFQUWg4dlZmT0t-QX4"},
	})
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(tok, "T1=="))
	if want := "partner_id=<your api key here>&sig=2b4239d658a5dba44da0c22e39061c9eb5845115:" + data; string(raw) != want {
		t.Fatalf("decoded token = %s", raw)
	}
}

// §5.6: the high-level T1 generator in the recommended field order.
func TestT1TokenVector(t *testing.T) {
	t.Parallel()
	c := fixtureClient(time.Unix(1424221013, 0), 123456)
	got, err := c.T1Token(fixtureSession, TokenOptions{
		Role:           RolePublisher,
		ExpireTime:     time.Unix(1424307413, 0),
		ConnectionData: `{"name":"Jo Doe"}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = "T1==cGFydG5lcl9pZD0xMjM0NTYmc2lnPTVkNTJjNzVjOTBlZjZiNTBjYTVkNzI5ZjM0ZTI0NTU3ZTU2NDdlOTM6c2Vzc2lvbl9pZD0xX01YNHhNak0wTlRaLWZsTmhkQ0JOWVhJZ01UVWdNVFE2TkRJNk1qTWdVRVJVSURJd01UUi1NQzQwT1RBeE16QXlOWDQmY3JlYXRlX3RpbWU9MTQyNDIyMTAxMyZleHBpcmVfdGltZT0xNDI0MzA3NDEzJm5vbmNlPTEyMzQ1NiZyb2xlPXB1Ymxpc2hlciZjb25uZWN0aW9uX2RhdGE9JTdCJTIybmFtZSUyMiUzQSUyMkpvK0RvZSUyMiU3RCZpbml0aWFsX2xheW91dF9jbGFzc19saXN0PQ=="
	if got != want {
		t.Fatalf("T1Token =\n%s\nwant\n%s", got, want)
	}
}

// §5.5: the self-computed client-token JWT, byte for byte, and the
// recorded Ruby REST JWT as a verify vector.
func TestHS256Vectors(t *testing.T) {
	t.Parallel()
	got, err := SignHS256(fixtureSecret, map[string]any{
		"iss": "123456", "ist": "project", "iat": 1700000000, "exp": 1700086400,
		"jti": "00000000-0000-4000-8000-000000000000", "scope": "session.connect",
		"session_id": fixtureSession, "role": "publisher", "nonce": 424242,
		"create_time": 1700000000, "expire_time": 1700086400,
		"connection_data": `{"name":"Jo"}`, "initial_layout_class_list": "",
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb25uZWN0aW9uX2RhdGEiOiJ7XCJuYW1lXCI6XCJKb1wifSIsImNyZWF0ZV90aW1lIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwODY0MDAsImV4cGlyZV90aW1lIjoxNzAwMDg2NDAwLCJpYXQiOjE3MDAwMDAwMDAsImluaXRpYWxfbGF5b3V0X2NsYXNzX2xpc3QiOiIiLCJpc3MiOiIxMjM0NTYiLCJpc3QiOiJwcm9qZWN0IiwianRpIjoiMDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAwIiwibm9uY2UiOjQyNDI0Miwicm9sZSI6InB1Ymxpc2hlciIsInNjb3BlIjoic2Vzc2lvbi5jb25uZWN0Iiwic2Vzc2lvbl9pZCI6IjFfTVg0eE1qTTBOVFotZmxOaGRDQk5ZWElnTVRVZ01UUTZOREk2TWpNZ1VFUlVJREl3TVRSLU1DNDBPVEF4TXpBeU5YNCJ9.3Ak_kbvDlI5QHILoOynqZyM7LtyNh0RueSbmEIVpi7o"
	if got != want {
		t.Fatalf("SignHS256 =\n%s\nwant\n%s", got, want)
	}
	const ruby = "eyJpc3QiOiJwcm9qZWN0IiwiYWxnIjoiSFMyNTYifQ.eyJpc3MiOiIxMjM0NTYiLCJpYXQiOjE0OTI1MTA2NjAsImV4cCI6MTQ5MjUxMDk2MH0.BplMVhJWx4ld7KLKXqEmow6MjNPPFw9W8IHCMfeb120"
	claims, err := VerifyHS256(fixtureSecret, ruby)
	if err != nil || claims["iss"] != "123456" {
		t.Fatalf("Ruby vector: %v %v", claims, err)
	}
	if _, err := VerifyHS256("0"+fixtureSecret[1:], ruby); !errors.Is(err, ErrBadJWT) {
		t.Fatalf("wrong secret verified: %v", err)
	}
}

// §5.4: decode-and-verify for tokens with a random nonce and the real clock.
func TestTokensDecodeAndVerify(t *testing.T) {
	t.Parallel()
	c := fixtureClient(time.Now(), 0)
	c.nonce = randomNonce
	for _, typ := range []TokenType{TokenT1, TokenJWT} {
		t.Run(string(typ), func(t *testing.T) {
			c := *c
			c.tokenType = typ
			opts := TokenOptions{ConnectionData: `{"name":"Zoë & <Bo>"}`, LayoutClasses: []string{"focus", "main"}}
			a, err := c.Token(fixtureSession, opts)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := c.Token(fixtureSession, opts)
			fields := decode(t, typ, a)
			other := decode(t, typ, b)
			now := time.Now().Unix()
			checks := map[string]string{
				"session_id": fixtureSession, "role": "publisher",
				"connection_data": opts.ConnectionData, "initial_layout_class_list": "focus main",
			}
			for k, v := range checks {
				if fields[k] != v {
					t.Errorf("%s = %q, want %q", k, fields[k], v)
				}
			}
			if exp := atoi(t, fields["expire_time"]); exp < now+86400-10 || exp > now+86400+10 {
				t.Errorf("expire_time %d, want about now+24h", exp)
			}
			if fields["nonce"] == "" || fields["nonce"] == other["nonce"] || fields["create_time"] == "" {
				t.Errorf("nonce %q/%q, create_time %q", fields["nonce"], other["nonce"], fields["create_time"])
			}
		})
	}
}

// decode verifies a token under the fixture secret and returns its fields
// as strings.
func decode(t *testing.T, typ TokenType, tok string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if typ == TokenT1 {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(tok, "T1=="))
		if err != nil {
			t.Fatal(err)
		}
		head, data, _ := strings.Cut(string(raw), ":")
		if !strings.HasPrefix(head, "partner_id=123456&sig=") || !strings.HasSuffix(head, signT1(fixtureSecret, data)) {
			t.Fatalf("T1 head %q does not verify", head)
		}
		for _, kv := range strings.Split(data, "&") {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = unescape(t, v)
		}
		return out
	}
	claims, err := VerifyHS256(fixtureSecret, tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != fixtureKey || claims["ist"] != "project" || claims["scope"] != "session.connect" {
		t.Fatalf("claims %v", claims)
	}
	if claims["exp"] == nil || claims["exp"].(json.Number).String() != claims["expire_time"].(json.Number).String() {
		t.Fatalf("exp %v must be set and equal expire_time %v", claims["exp"], claims["expire_time"])
	}
	for k, v := range claims {
		switch v := v.(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		}
	}
	return out
}

func TestTokenValidation(t *testing.T) {
	t.Parallel()
	now := time.Unix(1700000000, 0)
	c := fixtureClient(now, 1)
	tests := []struct {
		name    string
		session string
		opts    TokenOptions
		want    error
	}{
		{"foreign session", "1_MX42NTQzMjF-flNhdCBNYXIgMTUgMTQ6NDI6MjMgUERUIDIwMTR-MC40OTAxMzAyNX4", TokenOptions{}, ErrSessionNotOwned},
		{"garbage session", "NOT A REAL SESSIONID", TokenOptions{}, ErrInvalidSessionID},
		{"no session", "", TokenOptions{}, ErrInvalidSessionID},
		{"bad role", fixtureSession, TokenOptions{Role: "5"}, ErrInvalidRole},
		{"expired", fixtureSession, TokenOptions{ExpireTime: now.Add(-time.Hour)}, ErrInvalidExpireTime},
		{"too far", fixtureSession, TokenOptions{ExpireTime: now.Add(31 * 24 * time.Hour)}, ErrInvalidExpireTime},
		{"data 1001 bytes", fixtureSession, TokenOptions{ConnectionData: strings.Repeat("x", 1001)}, ErrDataTooLong},
		{"layout too long", fixtureSession, TokenOptions{LayoutClasses: []string{strings.Repeat("x", 1001)}}, ErrLayoutTooLong},
		{"data 1000 bytes", fixtureSession, TokenOptions{ConnectionData: strings.Repeat("x", 1000)}, nil},
		{"30 days", fixtureSession, TokenOptions{ExpireTime: now.Add(30 * 24 * time.Hour), Role: RoleSubscriber}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, fn := range []func(string, TokenOptions) (string, error){c.T1Token, c.JWTToken} {
				_, err := fn(tc.session, tc.opts)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			}
		})
	}
}

func TestNewClientValidatesConfig(t *testing.T) {
	t.Parallel()
	secret := "0123456789abcdef0123456789ABCDEF01234567"
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"ok", Config{APIKey: "123456", APISecret: secret}, nil},
		{"key without secret", Config{APIKey: "123456"}, ErrMissingCredentials},
		{"secret without key", Config{APISecret: secret}, ErrMissingCredentials},
		{"short secret", Config{APIKey: "123456", APISecret: "abc"}, ErrBadAPISecret},
		{"non-hex secret", Config{APIKey: "123456", APISecret: strings.Repeat("z", 40)}, ErrBadAPISecret},
		{"non-digit key", Config{APIKey: "12ab", APISecret: secret}, ErrBadAPIKey},
		{"bad URL", Config{APIKey: "123456", APISecret: secret, APIURL: "::nope"}, ErrBadAPIURL},
		{"relative URL", Config{APIKey: "123456", APISecret: secret, APIURL: "api.opentok.com"}, ErrBadAPIURL},
		{"bad token type", Config{APIKey: "123456", APISecret: secret, TokenType: "t2"}, ErrBadTokenType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewClient(tc.cfg)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), tc.cfg.APISecret) && tc.cfg.APISecret != "" {
				t.Fatalf("error reveals the secret: %v", err)
			}
		})
	}
	if s := (Config{APIKey: "1", APISecret: secret}).String(); strings.Contains(s, secret) {
		t.Fatalf("Config.String reveals the secret: %s", s)
	}
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func unescape(t *testing.T, s string) string {
	t.Helper()
	v, err := url.QueryUnescape(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
