// Package opentoktest is a local stand-in for the OpenTok REST API, which
// tests cannot reach, speaking its documented protocol (docs/opentok-protocol.md §3, §5.7):
// it checks every request the way OpenTok does and answers with a JSON
// array holding a new, well-formed session ID, or with OpenTok's errors.
// It also decodes and verifies client tokens (docs/opentok-protocol.md §5.4).
package opentoktest

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/buddytok/buddytok/pkg/opentok"
)

// Request is what the server saw of one session/create call.
type Request struct {
	Method, Path string
	Header       http.Header
	Form         url.Values
	Claims       map[string]any // the verified X-OPENTOK-AUTH claims
	Refused      string         // why the server refused it, if it did
}

// Server is the stand-in. Create it with NewServer; Close it when done.
type Server struct {
	*httptest.Server
	apiKey, secret string

	mu        sync.Mutex
	requests  []Request
	failNext  int           // answer this many requests with 500 first
	delay     time.Duration // wait this long before answering
	sessionOK int
}

// NewServer starts a server for the project apiKey/secret.
func NewServer(apiKey, secret string) *Server {
	s := &Server{apiKey: apiKey, secret: secret}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	return s
}

// FailNext makes the next n requests fail with 500 Internal Server Error.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Delay makes every answer wait d (to test client timeouts).
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Requests returns every request seen so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Sessions is how many sessions the server created.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessionOK
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	seen := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Form: r.PostForm}
	s.mu.Lock()
	delay := s.delay
	fail := s.failNext > 0
	if fail {
		s.failNext--
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	status, body := s.answer(r, &seen, fail)
	s.mu.Lock()
	s.requests = append(s.requests, seen)
	if status == http.StatusOK {
		s.sessionOK++
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]any{"code": -1, "message": msg, "description": msg})
	return b
}

// answer checks the request as OpenTok would and says what to send back.
func (s *Server) answer(r *http.Request, seen *Request, fail bool) (int, []byte) {
	refuse := func(status int, why string) (int, []byte) {
		seen.Refused = why
		return status, errorBody(why)
	}
	switch {
	case r.URL.Path != "/session/create":
		return refuse(http.StatusNotFound, "Not Found")
	case r.Method != http.MethodPost:
		return refuse(http.StatusMethodNotAllowed, "Method Not Allowed")
	case !strings.Contains(r.Header.Get("Accept"), "application/json"):
		return refuse(http.StatusNotAcceptable, "this stand-in speaks JSON only; send Accept: application/json")
	case !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
		return refuse(http.StatusBadRequest, "form body expected")
	}
	claims, err := opentok.VerifyHS256(s.secret, r.Header.Get("X-OPENTOK-AUTH"))
	if err != nil {
		return refuse(http.StatusForbidden, "Invalid signature")
	}
	seen.Claims = claims
	now := time.Now().Unix()
	iat, _ := claimInt(claims, "iat")
	exp, expOK := claimInt(claims, "exp")
	switch {
	case claims["iss"] != s.apiKey:
		return refuse(http.StatusForbidden, "Issuer not found")
	case claims["ist"] != "project":
		return refuse(http.StatusForbidden, "Invalid signature")
	case !expOK || exp <= now:
		return refuse(http.StatusForbidden, "token has expired")
	case exp-iat > 300:
		return refuse(http.StatusForbidden, "token lifetime exceeds 5 minutes")
	case iat > now+1:
		return refuse(http.StatusForbidden, "issued time cannot be greater than current time")
	case claims["jti"] == nil || claims["jti"] == "":
		return refuse(http.StatusForbidden, "jti missing")
	}
	switch p := r.PostForm.Get("p2p.preference"); p {
	case "enabled", "disabled":
	default:
		return refuse(http.StatusBadRequest, fmt.Sprintf("invalid p2p.preference %q", p))
	}
	if fail {
		return refuse(http.StatusInternalServerError, "Internal Server Error")
	}
	id := NewSessionID(s.apiKey)
	body, _ := json.Marshal([]map[string]any{{
		"session_id": id, "project_id": s.apiKey, "partner_id": s.apiKey,
		"create_dt": time.Now().UTC().Format(time.UnixDate), "media_server_url": "",
	}})
	return http.StatusOK, body
}

func claimInt(claims map[string]any, key string) (int64, bool) {
	n, ok := claims[key].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// NewSessionID mints a syntactically valid session ID for apiKey
// (docs/opentok-protocol.md §2): "1_" + base64url("1~<key>~~<ms>~<random>~").
func NewSessionID(apiKey string) string {
	raw := fmt.Sprintf("1~%s~~%d~%x~", apiKey, time.Now().UnixMilli(), rand.Uint64())
	return "1_" + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// T1 is a decoded T1 token.
type T1 struct {
	PartnerID string
	Sig       string
	Data      url.Values
}

// ErrBadToken is returned for a token that does not verify.
var ErrBadToken = errors.New("opentoktest: token does not verify")

// DecodeT1 decodes a T1 token and checks its signature under secret, the
// way the SDKs' tests do (docs/opentok-protocol.md §5.4).
func DecodeT1(token, secret string) (T1, error) {
	rest, ok := strings.CutPrefix(token, "T1==")
	if !ok {
		return T1{}, fmt.Errorf("%w: no T1== prefix", ErrBadToken)
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return T1{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	head, data, ok := strings.Cut(string(raw), ":")
	if !ok {
		return T1{}, fmt.Errorf("%w: no ':'", ErrBadToken)
	}
	h, err := url.ParseQuery(head)
	if err != nil {
		return T1{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	fields, err := url.ParseQuery(data)
	if err != nil {
		return T1{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if !validSig(secret, data, h.Get("sig")) {
		return T1{}, fmt.Errorf("%w: signature", ErrBadToken)
	}
	return T1{PartnerID: h.Get("partner_id"), Sig: h.Get("sig"), Data: fields}, nil
}

// validSig checks the HMAC-SHA1 of the raw data part against sig.
func validSig(secret, data, sig string) bool {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(data))
	return hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(sig))
}
