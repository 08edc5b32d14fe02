package opentok

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Role is what a token allows its holder to do in a session.
type Role string

// Roles OpenTok knows.
const (
	RolePublisher     Role = "publisher"
	RoleSubscriber    Role = "subscriber"
	RoleModerator     Role = "moderator"
	RolePublisherOnly Role = "publisheronly"
)

func (r Role) valid() bool {
	switch r {
	case RolePublisher, RoleSubscriber, RoleModerator, RolePublisherOnly:
		return true
	}
	return false
}

// TokenType selects the client token format.
type TokenType string

// Token types. T1 is the default: every OpenTok client and server accepts
// it, whereas HS256 JWT client tokens once failed server-side over the
// `exp` claim (docs/opentok-protocol.md §4.1) and are accepted only by newer servers.
const (
	TokenT1  TokenType = "t1"
	TokenJWT TokenType = "jwt"
)

// Limits from the SDKs (docs/opentok-protocol.md §1.4).
const (
	MaxConnectionData = 1000 // bytes
	MaxLayoutClasses  = 1000 // bytes, joined
	MaxTokenLifetime  = 30 * 24 * time.Hour
	DefaultTokenTTL   = 24 * time.Hour
)

// TokenOptions are the per-token settings.
type TokenOptions struct {
	Role           Role      // default publisher
	ExpireTime     time.Time // default now + 24 h; at most now + 30 days
	ConnectionData string    // delivered to other clients as connection.data
	LayoutClasses  []string  // initial_layout_class_list
}

// Token errors. Each is wrapped with detail; test with errors.Is.
var (
	ErrInvalidRole       = errors.New("opentok: invalid role")
	ErrInvalidExpireTime = errors.New("opentok: invalid expire time")
	ErrDataTooLong       = errors.New("opentok: connection data longer than 1000 bytes")
	ErrLayoutTooLong     = errors.New("opentok: layout class list longer than 1000 bytes")
)

// Field is one key=value pair of a T1 data string, kept in order.
type Field struct{ Key, Value string }

// EncodeT1 builds a T1 token from data fields in the given order: the
// data string is the fields form-encoded (url.QueryEscape per value) and
// joined by &, signed with HMAC-SHA1 under the secret (docs/opentok-protocol.md §1.1).
func EncodeT1(apiKey, secret string, fields []Field) string {
	var data strings.Builder
	for i, f := range fields {
		if i > 0 {
			data.WriteByte('&')
		}
		data.WriteString(url.QueryEscape(f.Key))
		data.WriteByte('=')
		data.WriteString(url.QueryEscape(f.Value))
	}
	inner := "partner_id=" + apiKey + "&sig=" + signT1(secret, data.String()) + ":" + data.String()
	return "T1==" + base64.StdEncoding.EncodeToString([]byte(inner))
}

func signT1(secret, data string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(data))
	return hex.EncodeToString(mac.Sum(nil))
}

// tokenFields validates opts for sessionID and returns the resolved
// role, expiry and layout list.
func (c *Client) tokenFields(sessionID string, opts TokenOptions, now time.Time) (Role, time.Time, string, error) {
	if err := ValidateSessionOwner(sessionID, c.apiKey); err != nil {
		return "", time.Time{}, "", err
	}
	role := opts.Role
	if role == "" {
		role = RolePublisher
	}
	if !role.valid() {
		return "", time.Time{}, "", fmt.Errorf("%w: %q", ErrInvalidRole, role)
	}
	expire := opts.ExpireTime
	if expire.IsZero() {
		expire = now.Add(DefaultTokenTTL)
	}
	switch {
	case !expire.After(now):
		return "", time.Time{}, "", fmt.Errorf("%w: %s is not in the future", ErrInvalidExpireTime, expire.UTC().Format(time.RFC3339))
	case expire.Sub(now) > MaxTokenLifetime:
		return "", time.Time{}, "", fmt.Errorf("%w: more than 30 days ahead", ErrInvalidExpireTime)
	}
	if len(opts.ConnectionData) > MaxConnectionData {
		return "", time.Time{}, "", fmt.Errorf("%w (%d bytes)", ErrDataTooLong, len(opts.ConnectionData))
	}
	layout := strings.Join(opts.LayoutClasses, " ")
	if len(layout) > MaxLayoutClasses {
		return "", time.Time{}, "", fmt.Errorf("%w (%d bytes)", ErrLayoutTooLong, len(layout))
	}
	return role, expire, layout, nil
}

// T1Token issues a T1 client token for sessionID. Fields are in the order
// session_id, create_time, expire_time, nonce, role, [connection_data],
// initial_layout_class_list (docs/opentok-protocol.md §1.2).
func (c *Client) T1Token(sessionID string, opts TokenOptions) (string, error) {
	now := c.now()
	role, expire, layout, err := c.tokenFields(sessionID, opts, now)
	if err != nil {
		return "", err
	}
	fields := []Field{
		{"session_id", sessionID},
		{"create_time", strconv.FormatInt(now.Unix(), 10)},
		{"expire_time", strconv.FormatInt(expire.Unix(), 10)},
		{"nonce", strconv.FormatInt(c.nonce(), 10)},
		{"role", string(role)},
	}
	if opts.ConnectionData != "" {
		fields = append(fields, Field{"connection_data", opts.ConnectionData})
	}
	fields = append(fields, Field{"initial_layout_class_list", layout})
	return EncodeT1(c.apiKey, c.secret, fields), nil
}

// JWTToken issues an HS256 JWT client token for sessionID with the claim
// set of the official Node SDK, and always an exp claim (docs/opentok-protocol.md §4.1).
func (c *Client) JWTToken(sessionID string, opts TokenOptions) (string, error) {
	now := c.now()
	role, expire, layout, err := c.tokenFields(sessionID, opts, now)
	if err != nil {
		return "", err
	}
	claims := map[string]any{
		"iss":                       c.apiKey,
		"ist":                       "project",
		"iat":                       now.Unix(),
		"exp":                       expire.Unix(),
		"jti":                       newJTI(),
		"scope":                     "session.connect",
		"session_id":                sessionID,
		"role":                      string(role),
		"nonce":                     c.nonce(),
		"create_time":               now.Unix(),
		"expire_time":               expire.Unix(),
		"initial_layout_class_list": layout,
	}
	if opts.ConnectionData != "" {
		claims["connection_data"] = opts.ConnectionData
	}
	return SignHS256(c.secret, claims)
}

// Token issues a client token of the client's configured type.
func (c *Client) Token(sessionID string, opts TokenOptions) (string, error) {
	if c.tokenType == TokenJWT {
		return c.JWTToken(sessionID, opts)
	}
	return c.T1Token(sessionID, opts)
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// SignHS256 signs claims as a compact JWT with header
// {"alg":"HS256","typ":"JWT"}. Claims are encoded with sorted keys and
// without HTML escaping.
func SignHS256(secret string, claims map[string]any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(claims); err != nil {
		return "", fmt.Errorf("opentok: encode claims: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	signing := jwtHeader + "." + payload
	return signing + "." + signHS256(secret, signing), nil
}

func signHS256(secret, signing string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// ErrBadJWT is returned by VerifyHS256 for a token that is malformed or
// not signed with the secret.
var ErrBadJWT = errors.New("opentok: JWT malformed or not signed with this secret")

// VerifyHS256 checks a compact HS256 JWT against the secret and returns
// its claims. It does not judge the claims themselves (exp and so on).
func VerifyHS256(secret, token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: %d parts", ErrBadJWT, len(parts))
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadJWT, err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "HS256" {
		return nil, fmt.Errorf("%w: alg is not HS256", ErrBadJWT)
	}
	want := signHS256(secret, parts[0]+"."+parts[1])
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return nil, fmt.Errorf("%w: signature", ErrBadJWT)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadJWT, err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrBadJWT, err)
	}
	return claims, nil
}
