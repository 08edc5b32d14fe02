package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/identity"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// sign makes a token of claims with key (an HMAC secret or a private key).
func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claims(edits map[string]any) map[string]any {
	c := map[string]any{"sub": "u-1", "name": "  Ann  Lee ", "iss": "https://id.example", "aud": "buddytok",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestVerifyHMAC(t *testing.T) {
	t.Parallel()
	v, err := identity.New(identity.Config{HMACSecret: secret, Issuer: "https://id.example", Audience: "buddytok"})
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Unix()
	tests := []struct {
		name  string
		token string
		want  string // the name, or "" for refused
	}{
		{"valid", sign(t, jose.HS256, secret, "", claims(nil)), "Ann Lee"},
		{"missing", "", ""},
		{"garbage", "not.a.token", ""},
		{"forged: another secret", sign(t, jose.HS256, []byte("another secret, just as long as it"), "", claims(nil)), ""},
		{"expired", sign(t, jose.HS256, secret, "", claims(map[string]any{"exp": past})), ""},
		{"within the leeway", sign(t, jose.HS256, secret, "", claims(map[string]any{"exp": time.Now().Add(-10 * time.Second).Unix()})), "Ann Lee"},
		{"no expiry", sign(t, jose.HS256, secret, "", claims(map[string]any{"exp": nil})), ""},
		{"not valid yet", sign(t, jose.HS256, secret, "", claims(map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), ""},
		{"another issuer", sign(t, jose.HS256, secret, "", claims(map[string]any{"iss": "https://evil.example"})), ""},
		{"another audience", sign(t, jose.HS256, secret, "", claims(map[string]any{"aud": "other"})), ""},
		{"no name", sign(t, jose.HS256, secret, "", claims(map[string]any{"name": nil})), ""},
		{"an invisible name", sign(t, jose.HS256, secret, "", claims(map[string]any{"name": "\u3164"})), ""},
		{"alg none", unsigned(claims(nil)), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := v.Verify(context.Background(), tc.token)
			if tc.want == "" {
				if protocol.CodeOf(err) != protocol.CodeUnauthorized {
					t.Fatalf("Verify = %+v, %v; want unauthorized", id, err)
				}
				return
			}
			if err != nil || id.Name != tc.want || id.Subject != "u-1" {
				t.Fatalf("Verify = %+v, %v; want %q", id, err, tc.want)
			}
		})
	}
}

// unsigned is a token with "alg":"none", which must never pass.
func unsigned(c map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(c) + "."
}

func TestVerifyJWKS(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var set atomic.Value
	set.Store(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		_ = json.NewEncoder(w).Encode(set.Load())
	}))
	t.Cleanup(srv.Close)
	v, err := identity.New(identity.Config{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if id, err := v.Verify(ctx, sign(t, jose.ES256, key, "k1", claims(nil))); err != nil || id.Name != "Ann Lee" {
		t.Fatalf("a token of the key set: %+v, %v", id, err)
	}
	// A public key used as an HMAC secret (algorithm confusion) is refused.
	pub, _ := json.Marshal(jose.JSONWebKey{Key: key.Public()})
	if _, err := v.Verify(ctx, sign(t, jose.HS256, pub, "k1", claims(nil))); protocol.CodeOf(err) != protocol.CodeUnauthorized {
		t.Fatalf("HS256 with the public key: %v, want unauthorized", err)
	}
	// A key that is not in the set, even after a fetch, is refused; the
	// set is fetched again at most once in a while for unknown keys.
	before := fetches.Load()
	for range 3 {
		if _, err := v.Verify(ctx, sign(t, jose.ES256, rotated, "k2", claims(nil))); protocol.CodeOf(err) != protocol.CodeUnauthorized {
			t.Fatalf("a key not in the set: %v, want unauthorized", err)
		}
	}
	if n := fetches.Load() - before; n > 1 {
		t.Fatalf("%d fetches for three tokens of an unknown key", n)
	}
	// A token signed by the right key ID but another key: refused.
	if _, err := v.Verify(ctx, sign(t, jose.ES256, rotated, "k1", claims(nil))); protocol.CodeOf(err) != protocol.CodeUnauthorized {
		t.Fatalf("a forged signature: %v, want unauthorized", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]identity.Config{
		"nothing":      {},
		"both":         {HMACSecret: secret, JWKSURL: "https://id.example/jwks"},
		"short secret": {HMACSecret: []byte("short")},
	} {
		if _, err := identity.New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
