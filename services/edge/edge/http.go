package edge

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"

	"github.com/buddytok/buddytok/pkg/opsserver"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/web"
)

func (e *Edge) routes() *fiber.App {
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		// A connection's 4 KiB request reader goes back to fasthttp's pool
		// once a request is read, unless the client sent more behind it: a
		// WebSocket, which fasthttp hands the reader it read the upgrade
		// with, would otherwise hold it for its whole life.
		ReduceMemoryUsage: true,
		BodyLimit:         64 << 10,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			code := fiber.StatusInternalServerError
			var fe *fiber.Error
			if errors.As(err, &fe) {
				code = fe.Code
			}
			return c.Status(code).JSON(fiber.Map{"error": http.StatusText(code)})
		},
	})
	app.Use(e.securityHeaders)
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/readyz", e.readyz)
	if !e.cfg.NoUsersAPI {
		app.Get("/api/users", e.users)
	}
	app.Use("/ws", e.upgradeGate)
	// The session writes frames itself: the library
	// writes only control frames, so its write buffer is borrowed from a
	// pool while it does. Client frames are small; a larger one takes a
	// few more reads.
	app.Get("/ws", websocket.New(e.serveWS, websocket.Config{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
	}))
	app.Get("/api/site", e.site)
	// A room's link is the page itself; the page reads the room from the
	// path and checks its name with the rule the edge and the services
	// apply.
	app.Get("/r/:room", e.page)
	app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(web.Files), Index: "index.html"}))
	return app
}

// page serves the page at a room's link.
func (e *Edge) page(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(web.Index)
}

// site serves GET /api/site: what the page needs to know of this
// deployment before anyone joins.
func (e *Edge) site(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"lobby": !e.cfg.NoLobby})
}

// readyz answers /readyz on the users' port too, for a load balancer that
// probes only it.
func (e *Edge) readyz(c *fiber.Ctx) error {
	checks := e.Checks(c.UserContext())
	return c.Status(opsserver.Status(checks)).JSON(checks)
}

// Checks are the edge's readiness checks (servicemain.Checker): NATS
// connected, the rooms' hub running, its lease held.
func (e *Edge) Checks(context.Context) map[string]bool {
	e.mu.Lock()
	lease := e.leaseOK
	e.mu.Unlock()
	return map[string]bool{"nats": e.nc.IsConnected(), "buddy_list": e.hub.Ready(), "lease": lease}
}

// upgradeGate lets only WebSocket upgrades from allowed origins through.
func (e *Edge) upgradeGate(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return fiber.ErrUpgradeRequired
	}
	peer := peerAddr(c)
	scheme := admission.Scheme(c.Context().IsTLS(), e.gate.Trusted(peer), c.Get(fiber.HeaderXForwardedProto))
	if !e.origins.Allows(c.Get(fiber.HeaderOrigin), scheme, string(c.Request().Host())) {
		return e.refuse(c, fiber.StatusForbidden, string(protocol.CodeOriginRefused),
			protocol.Errorf(protocol.CodeOriginRefused, "this page's origin may not connect; see ALLOWED_ORIGINS"))
	}
	// Refused here, before the upgrade, what the session's admission would
	// refuse after it (it counts the connection): a load balancer can take a 503 to
	// another edge, and a refused address costs no upgrade.
	key := admission.AddrKey(e.gate.ClientAddr(peer, c.Get(fiber.HeaderXForwardedFor)))
	if r := e.gate.Check(key); r != nil {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(max(time.Second, r.RetryAfter.Round(time.Second))/time.Second)))
		return e.refuse(c, r.Status, r.Reason, r.Err)
	}
	c.Locals(addrLocal, key)
	if e.ident != nil {
		token := strings.TrimPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
		if token == "" {
			token = c.Query("access_token")
		}
		id, err := e.ident.Verify(c.UserContext(), token)
		if err != nil {
			status := fiber.StatusUnauthorized
			if protocol.CodeOf(err) != protocol.CodeUnauthorized {
				e.log.Warn("identity token not verified", "err", err)
				status = fiber.StatusServiceUnavailable
			} else {
				c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="buddytok"`)
			}
			return e.refuse(c, status, string(protocol.CodeOf(err)), err)
		}
		c.Locals(identityLocal, &id)
	}
	return c.Next()
}

// peerAddr is the address the HTTP request came from.
func peerAddr(c *fiber.Ctx) netip.Addr {
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return peer.Unmap()
}

// refuse answers an HTTP request the edge's limits or checks refuse with
// status and err's code and message, and counts it under reason.
func (e *Edge) refuse(c *fiber.Ctx, status int, reason string, err error) error {
	e.metrics.Refused.WithLabelValues(reason).Inc()
	pe := protocol.AsError(err)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	return c.Status(status).JSON(fiber.Map{"code": pe.Code, "message": pe.Message})
}

// addrLocal is the request local that carries a connection's address key
// from upgradeGate to serveWS.
const addrLocal = "buddytok.addr"

// identityLocal carries a verified identity from upgradeGate to serveWS.
const identityLocal = "buddytok.identity"

// users serves GET /api/users?room=<room>: every online user of one named
// room (the lobby if none is named and the edge has one), as the welcome
// lists them: from the list the hub keeps encoded per revision while the
// room is open on this edge, else read for the request. There is no way to
// list rooms. Rate-limited per client address.
func (e *Edge) users(c *fiber.Ctx) error {
	key := admission.AddrKey(e.gate.ClientAddr(peerAddr(c), c.Get(fiber.HeaderXForwardedFor)))
	if err := e.gate.AllowListing(key); err != nil {
		c.Set(fiber.HeaderRetryAfter, "1")
		return e.refuse(c, fiber.StatusTooManyRequests, "users_rate", err)
	}
	room := c.Query("room", protocol.Lobby)
	if err := protocol.CheckRoom(room); err != nil {
		pe := protocol.AsError(err)
		return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{"code": pe.Code, "message": pe.Message})
	}
	if room == protocol.Lobby && e.cfg.NoLobby {
		return c.Status(fiber.StatusNotFound).JSON(fiber.Map{"code": protocol.CodeLobbyClosed, "message": "there is no lobby here; name a room"})
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), e.cfg.RequestTimeout)
	defer cancel()
	list, err := e.hub.List(ctx, room)
	if err != nil {
		e.log.Warn("listing a room failed", "room", room, "err", err)
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"code": protocol.CodeUnavailable, "message": "the list cannot be read now; try again"})
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(list)
}
