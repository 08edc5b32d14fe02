package admission

import (
	"fmt"
	"net/url"
	"strings"
)

// Origins is the parsed ALLOWED_ORIGINS: each one scheme://host[:port] in
// its canonical form, or any.
type Origins struct {
	any     bool
	allowed map[string]bool
}

// ParseOrigins checks every allowed origin and puts it in canonical form.
func ParseOrigins(list []string) (Origins, error) {
	o := Origins{allowed: map[string]bool{}}
	for _, s := range list {
		if s == "*" {
			o.any = true
			continue
		}
		c, ok := canonicalOrigin(s)
		if !ok {
			return o, fmt.Errorf("ALLOWED_ORIGINS: %q is not an origin (scheme://host[:port], scheme http or https)", s)
		}
		o.allowed[c] = true
	}
	return o, nil
}

// canonicalOrigin is s as a browser's Origin header would carry it:
// lower-case scheme and host, the port only if it is not the scheme's
// default. Anything but an http or https origin is not one.
func canonicalOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.User != nil || u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return "", false
	}
	if port == "" || scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return scheme + "://" + host + ":" + port, true
	}
	return scheme + "://" + host, true
}

// Any reports whether every origin is allowed ("*").
func (o Origins) Any() bool { return o.any }

// Allows reports whether a browser page of origin may open a WebSocket to
// an edge reached as scheme://host: its own origin (scheme, host and port
// all equal), or an allowed one. No Origin header is not a browser's
// request, and passes: the Origin check protects browsers' users from
// other sites; the admission limits bound everyone.
func (o Origins) Allows(origin, scheme, host string) bool {
	if origin == "" || o.any {
		return true
	}
	c, ok := canonicalOrigin(origin)
	if !ok {
		return false
	}
	if o.allowed[c] {
		return true
	}
	own, ok := canonicalOrigin(scheme + "://" + host)
	return ok && own == c
}

// Scheme is the scheme the browser used to reach the edge: https if the
// edge terminates TLS (tls), or if a trusted proxy (trustedPeer) says so in
// forwardedProto (its X-Forwarded-Proto).
func Scheme(tls, trustedPeer bool, forwardedProto string) string {
	if tls {
		return "https"
	}
	if trustedPeer {
		if p := strings.ToLower(forwardedProto); p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}
