package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// A slow identity provider holds up only the tokens whose key is not
// known yet: while a fetch of the key set waits on it, a token of a known
// key is verified at once. (Issue #23: the fetch held the verifier's lock,
// so a token with an unknown key ID stalled every upgrade for up to 10 s.)
func TestSlowKeySetFetchHoldsUpNoKnownKey(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	release := make(chan struct{})
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) > 1 {
			<-release // every fetch after the first hangs
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	v, err := New(Config{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	token := func(kid string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(map[string]any{"name": "Ann", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, token("k1")); err != nil {
		t.Fatal(err)
	}
	// An unknown key ID, long enough after the last fetch, fetches the
	// set again: that fetch hangs.
	v.mu.Lock()
	v.tried = time.Now().Add(-time.Hour)
	v.mu.Unlock()
	unknown := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := v.Verify(wctx, token("k2"))
		unknown <- err
	}()
	for fetches.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, token("k1")); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a token of a known key, during a fetch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a token of a known key waited for a fetch of the key set")
	}
	select {
	case err := <-unknown:
		t.Fatalf("the token of an unknown key was answered (%v) before its fetch ended", err)
	default:
	}
}
