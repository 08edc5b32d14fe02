package opentok

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Session ID errors.
var (
	ErrInvalidSessionID = errors.New("opentok: session ID is not valid")
	ErrSessionNotOwned  = errors.New("opentok: session does not belong to this API key")
)

// maxSessionID is the longest session ID OpenTok issues.
const maxSessionID = 255

// ValidateSessionOwner checks that sessionID is a well-formed OpenTok
// session ID whose API key field is apiKey (docs/opentok-protocol.md §2). It never panics.
func ValidateSessionOwner(sessionID, apiKey string) error {
	if len(sessionID) < 3 || len(sessionID) > maxSessionID {
		return fmt.Errorf("%w: length %d", ErrInvalidSessionID, len(sessionID))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(sessionID[2:], "="))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSessionID, err)
	}
	fields := strings.Split(string(raw), "~")
	if len(fields) < 2 {
		return fmt.Errorf("%w: no API key field", ErrInvalidSessionID)
	}
	if fields[1] != apiKey {
		return ErrSessionNotOwned
	}
	return nil
}
