package opentok

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/buddytok/buddytok/pkg/retry"
)

// MediaMode says how media flows in a session.
type MediaMode string

// Media modes: relayed is peer to peer (with TURN fallback), routed goes
// through OpenTok's Media Router.
const (
	Relayed MediaMode = "relayed"
	Routed  MediaMode = "routed"
)

// ArchiveMode says whether a session is archived automatically.
type ArchiveMode string

// Archive modes; always requires a routed session.
const (
	ArchiveManual ArchiveMode = "manual"
	ArchiveAlways ArchiveMode = "always"
)

// SessionOptions are the options of a new session. The zero value is a
// relayed session with manual archiving and no location hint.
type SessionOptions struct {
	MediaMode   MediaMode
	ArchiveMode ArchiveMode
	Location    string // optional IPv4 hint
}

// REST errors. A failed CreateSession returns an *APIError (which matches
// ErrAuth for 401/403) or an error wrapping ErrUnavailable.
var (
	ErrAuth        = errors.New("opentok: authentication refused (check OPENTOK_KEY and OPENTOK_SECRET)")
	ErrUnavailable = errors.New("opentok: API unreachable or failing")
	ErrBadOptions  = errors.New("opentok: invalid session options")
	ErrBadResponse = errors.New("opentok: unexpected response")
)

// APIError is a non-2xx answer of the OpenTok REST API.
type APIError struct {
	Status  int    // HTTP status
	Message string // the body's message, if any
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("opentok: API answered %d: %s", e.Status, msg)
}

// Is makes 401 and 403 match ErrAuth, and 5xx ErrUnavailable.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrUnavailable:
		return e.Status >= 500
	}
	return false
}

// authTTL is the lifetime of the X-OPENTOK-AUTH JWT: the REST API allows
// at most 5 minutes; 3 is what it recommends.
const authTTL = 3 * time.Minute

// authHeader returns a fresh X-OPENTOK-AUTH JWT. iat is a few seconds in
// the past so that a slightly fast local clock is not refused ("issued
// time cannot be greater than current time").
func (c *Client) authHeader() (string, error) {
	iat := c.now().Add(-5 * time.Second)
	return SignHS256(c.secret, map[string]any{
		"iss": c.apiKey,
		"ist": "project",
		"iat": iat.Unix(),
		"exp": iat.Add(authTTL).Unix(),
		"jti": newJTI(),
	})
}

func (o SessionOptions) form() (url.Values, error) {
	media := o.MediaMode
	if media == "" {
		media = Relayed
	}
	archive := o.ArchiveMode
	if archive == "" {
		archive = ArchiveManual
	}
	form := url.Values{}
	switch media {
	case Relayed:
		form.Set("p2p.preference", "enabled")
	case Routed:
		form.Set("p2p.preference", "disabled")
	default:
		return nil, fmt.Errorf("%w: media mode %q", ErrBadOptions, media)
	}
	switch archive {
	case ArchiveManual, ArchiveAlways:
		form.Set("archiveMode", string(archive))
	default:
		return nil, fmt.Errorf("%w: archive mode %q", ErrBadOptions, archive)
	}
	if archive == ArchiveAlways && media != Routed {
		return nil, fmt.Errorf("%w: archiving always needs a routed session", ErrBadOptions)
	}
	if o.Location != "" {
		ip := net.ParseIP(o.Location)
		if ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("%w: location %q is not an IPv4 address", ErrBadOptions, o.Location)
		}
		form.Set("location", o.Location)
	}
	return form, nil
}

// CreateSession creates a session over REST (docs/opentok-protocol.md §3) and returns its ID.
// Network errors and 5xx answers are retried a bounded number of times
// with a short backoff; 4xx answers are not.
func (c *Client) CreateSession(ctx context.Context, opts SessionOptions) (string, error) {
	form, err := opts.form()
	if err != nil {
		return "", err
	}
	endpoint := c.baseURL.JoinPath("session", "create").String()
	var id string
	err = retry.Do(ctx, retry.Policy{
		Initial: 200 * time.Millisecond, Max: 2 * time.Second, Attempts: c.retries + 1,
		Retryable: func(err error) bool { return errors.Is(err, ErrUnavailable) },
	}, func(ctx context.Context) error {
		var err error
		id, err = c.createOnce(ctx, endpoint, form.Encode())
		return err
	})
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return id, err
}

func (c *Client) createOnce(ctx context.Context, endpoint, body string) (string, error) {
	auth, err := c.authHeader()
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("opentok: build request: %w", err)
	}
	req.Header.Set("X-OPENTOK-AUTH", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "BuddyTok-OpenTok-Go/1")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("%w: read answer: %w", ErrUnavailable, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var body struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &body)
		return "", &APIError{Status: resp.StatusCode, Message: body.Message}
	}
	var sessions []struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(data, &sessions); err != nil {
		return "", fmt.Errorf("%w: not a JSON array of sessions: %v", ErrBadResponse, err)
	}
	if len(sessions) == 0 || sessions[0].SessionID == "" {
		return "", fmt.Errorf("%w: no session_id in the answer", ErrBadResponse)
	}
	if err := ValidateSessionOwner(sessions[0].SessionID, c.apiKey); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	return sessions[0].SessionID, nil
}
