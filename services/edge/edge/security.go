package edge

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// origins is the parsed ALLOWED_ORIGINS: each one scheme://host[:port] in
// its canonical form, or any.
type origins struct {
	any     bool
	allowed map[string]bool
}

// parseOrigins checks every allowed origin and puts it in canonical form.
func parseOrigins(list []string) (origins, error) {
	o := origins{allowed: map[string]bool{}}
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

// allows reports whether a browser page of origin may open a WebSocket to
// an edge reached as scheme://host: its own origin (scheme, host and port
// all equal), or an allowed one. No Origin header is not a browser's
// request, and passes: the Origin check protects browsers' users from
// other sites; the admission limits bound everyone.
func (o origins) allows(origin, scheme, host string) bool {
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

// requestScheme is the scheme the browser used to reach the edge: https
// if the edge terminates TLS, or if a trusted proxy says so.
func (e *Edge) requestScheme(c *fiber.Ctx, trustedPeer bool) string {
	if c.Context().IsTLS() {
		return "https"
	}
	if trustedPeer {
		if p := strings.ToLower(c.Get(fiber.HeaderXForwardedProto)); p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}

// The page's Content-Security-Policy. opentok.js comes from its CDN and
// loads its style sheets, images and fonts from there, injects styles, and
// talks to the OpenTok cloud over HTTPS and WebSockets; in WebRTC mode none
// of that is needed.
const (
	cspWebRTC = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"media-src 'self' blob: mediastream:; connect-src 'self'; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	openTokHosts = "https://*.opentok.com https://*.tokbox.com https://*.vonage.com"
	cspOpenTok   = "default-src 'self'; script-src 'self' https://static.opentok.com; " +
		"style-src 'self' 'unsafe-inline' " + openTokHosts + "; img-src 'self' data: blob: " + openTokHosts + "; " +
		"font-src 'self' " + openTokHosts + "; media-src 'self' blob: mediastream:; worker-src 'self' blob:; " +
		"connect-src 'self' " + openTokHosts + " wss://*.opentok.com wss://*.tokbox.com wss://*.vonage.com; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

// securityHeaders sets the headers every response of the edge carries: a
// Content-Security-Policy for the page's video mode (OpenTok's while the
// mode is not yet known), no sniffing, no framing, no referrer, and the
// camera and microphone for this origin only.
func (e *Edge) securityHeaders(c *fiber.Ctx) error {
	csp := cspOpenTok
	if e.knownMode() == protocol.ModeWebRTC {
		csp = cspWebRTC
	}
	c.Set(fiber.HeaderContentSecurityPolicy, csp)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderPermissionsPolicy, "camera=(self), microphone=(self), display-capture=(), geolocation=(), payment=(), usb=()")
	c.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.Set("Cross-Origin-Resource-Policy", "same-origin")
	return c.Next()
}
