package system_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/test/kit"
)

// With identity required, an upgrade without a valid token is refused
// (401 unauthorized) whatever is wrong with it, and a valid one, in the
// Authorization header or the access_token parameter, joins under the
// token's name, not the one the frame asks for.
func TestIdentityRequired(t *testing.T) {
	t.Parallel()
	secret := []byte("an HMAC secret of at least 32 bytes, for tests")
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Identity: identity.Config{HMACSecret: secret, Audience: "buddytok"}})
	token := func(key []byte, exp time.Duration, aud, name string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(map[string]any{"sub": "ann-1", "name": name, "aud": aud,
			"exp": time.Now().Add(exp).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	wsURL := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	for _, tc := range []struct{ name, token string }{
		{"missing", ""},
		{"expired", token(secret, -time.Hour, "buddytok", "Ann")},
		{"forged", token([]byte("another secret that is long enough, too"), time.Hour, "buddytok", "Ann")},
		{"for another service", token(secret, time.Hour, "other", "Ann")},
		{"no name", token(secret, time.Hour, "buddytok", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(w.Ctx, kit.WaitFor)
			defer cancel()
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			ws, resp, err := websocket.DefaultDialer.DialContext(ctx, wsURL, h)
			if err == nil {
				_ = ws.Close()
				t.Fatal("upgraded without a valid identity token")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("refusal %+v, want 401", resp)
			}
			var body struct {
				Code    protocol.Code `json:"code"`
				Message string        `json:"message"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if body.Code != protocol.CodeUnauthorized || body.Message == "" {
				t.Fatalf("refusal body %+v", body)
			}
		})
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	ann, err := client.DialHeader(ctx, w.Sys.EdgeURLs[0], http.Header{"Authorization": {"Bearer " + token(secret, time.Hour, "buddytok", "Ann Example")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ann.Close() })
	welcome, err := ann.Join(ctx, "Somebody Else")
	if err != nil {
		t.Fatal(err)
	}
	if welcome.You == nil || welcome.You.Name != "Ann Example" {
		t.Fatalf("joined as %+v, want the token's name", welcome.You)
	}
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL+"?access_token="+url.QueryEscape(token(secret, time.Hour, "buddytok", "Bob")), nil)
	if err != nil {
		t.Fatalf("a valid token as access_token: %v", err)
	}
	_ = ws.Close()
}
