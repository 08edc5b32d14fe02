package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// maxIceServers bounds ICE_SERVERS: each one costs every page a round of
// candidate gathering.
const maxIceServers = 8

// ParseIceServers reads ICE_SERVERS: a JSON array of RTCIceServer objects,
// each with "urls" (one URL or a list) of the schemes stun, stuns, turn or
// turns, and for TURN a "username" and a "credential":
//
//	[{"urls":"stun:stun.example.org:3478"},
//	 {"urls":["turn:turn.example.org:3478?transport=udp"],"username":"u","credential":"p"}]
//
// An empty string is no servers.
func ParseIceServers(s string) ([]protocol.IceServer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var raw []struct {
		URLs       json.RawMessage `json:"urls"`
		Username   string          `json:"username"`
		Credential string          `json:"credential"`
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("ICE_SERVERS: not a JSON array of {urls, username, credential}: %w", err)
	}
	if len(raw) > maxIceServers {
		return nil, fmt.Errorf("ICE_SERVERS: %d servers, at most %d", len(raw), maxIceServers)
	}
	servers := make([]protocol.IceServer, 0, len(raw))
	for i, r := range raw {
		var urls []string
		if bytes.HasPrefix(bytes.TrimSpace(r.URLs), []byte(`"`)) {
			var one string
			if err := json.Unmarshal(r.URLs, &one); err != nil {
				return nil, fmt.Errorf("ICE_SERVERS[%d].urls: %w", i, err)
			}
			urls = []string{one}
		} else if err := json.Unmarshal(r.URLs, &urls); err != nil || len(urls) == 0 {
			return nil, fmt.Errorf("ICE_SERVERS[%d]: urls must be a URL or a non-empty list of URLs", i)
		}
		turn := false
		for _, u := range urls {
			scheme, err := iceScheme(u)
			if err != nil {
				return nil, fmt.Errorf("ICE_SERVERS[%d]: %w", i, err)
			}
			turn = turn || strings.HasPrefix(scheme, "turn")
		}
		if turn && (r.Username == "" || r.Credential == "") {
			return nil, fmt.Errorf("ICE_SERVERS[%d]: a TURN server needs a username and a credential", i)
		}
		servers = append(servers, protocol.IceServer{URLs: urls, Username: r.Username, Credential: r.Credential})
	}
	return servers, nil
}

// iceScheme checks an ICE server URL (RFC 7064, 7065) and returns its
// scheme.
func iceScheme(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	switch u.Scheme {
	case "stun", "stuns", "turn", "turns":
	default:
		return "", fmt.Errorf("%q: the scheme must be stun, stuns, turn or turns", s)
	}
	if host, _, _ := strings.Cut(u.Opaque, "?"); host == "" || strings.HasPrefix(host, ":") {
		return "", errors.New(s + ": no host")
	}
	return u.Scheme, nil
}
