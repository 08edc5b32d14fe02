package edge

import (
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/buddytok/buddytok/pkg/protocol"
)

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
//
// A WebSocket upgrade gets none of them: its 101 carries no document to
// protect, and fasthttp keeps a hijacked connection's response headers
// for as long as the socket lives (2.3 KiB a socket, measured). A refused
// upgrade's JSON still carries nosniff (refuse).
func (e *Edge) securityHeaders(c *fiber.Ctx) error {
	if websocket.IsWebSocketUpgrade(c) {
		return c.Next()
	}
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
