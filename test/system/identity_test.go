package system_test

import (
	"context"
	"encoding/json"
	"io"
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

// An identity token in the URL's query (how a browser's WebSocket carries
// it) reaches no log line, at any level, and no metric: refused or
// accepted, it is a credential.
func TestAccessTokenNeverLogged(t *testing.T) {
	t.Parallel()
	secret := []byte("an HMAC secret of at least 32 bytes, for tests")
	var logs syncBuffer
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Logs: &logs, Identity: identity.Config{HMACSecret: secret}})
	sign := func(key []byte, exp time.Duration) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(map[string]any{"sub": "ann-1", "name": "Ann", "exp": time.Now().Add(exp).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good, forged, expired := sign(secret, time.Hour), sign([]byte("another secret that is long enough, too"), time.Hour), sign(secret, -time.Hour)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws?access_token="
	for _, tok := range []string{forged, expired, "not.a.token"} {
		if ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL+url.QueryEscape(tok), nil); err == nil {
			_ = ws.Close()
			t.Fatal("upgraded with a bad token")
		}
	}
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL+url.QueryEscape(good), nil)
	if err != nil {
		t.Fatalf("a valid token: %v", err)
	}
	join, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeJoin, Name: "x", Ref: "j"})
	if err := ws.WriteMessage(websocket.TextMessage, join); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	_ = ws.Close()
	resp, err := http.Get(w.Sys.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	all := logs.String()
	if !strings.Contains(all, "level") {
		t.Fatal("no log line was captured: the test would prove nothing")
	}
	for name, tok := range map[string]string{"valid": good, "forged": forged, "expired": expired} {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(all, sig) {
			t.Errorf("the %s token's signature is in a log line", name)
		}
		if strings.Contains(string(metrics), sig) {
			t.Errorf("the %s token's signature is in the metrics", name)
		}
	}
}
