package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The owner cookie: the secret that makes a session its player's.
//
// A session id is not a secret (it names the Nomad job, Consul services and
// KV keys), so the gateway gives the browser that creates (or resumes) a
// session a cookie that says which player it is: metal_player =
// base64url(player) "." expiry "." HMAC-SHA256(link key, both), named
// metal_p_<hash of the player> so that two players in one browser profile
// (two tabs, two links) each keep theirs. It is
// HttpOnly (page scripts never see it), SameSite=Strict (no other site's
// page sends it), Secure when the gateway is reached over HTTPS, and lives
// ownerCookieTTL. Reading a session, following its progress, stopping it,
// sending its WHEP offer and sharing it all need the cookie of the
// session's player; without it the gateway answers 404, as if the session
// did not exist.
//
// A cookie rather than a bearer token: the browser attaches it to the
// EventSource progress stream and to WHEP requests without page code (an
// EventSource cannot send headers), page scripts cannot read it, and a new
// tab or a reload of the player's link carries it. Bound to the player, not
// to one session id, so a failover's replacement session is the player's
// too. A player on another device resumes with their link, which sets the
// cookie there.

const (
	ownerCookiePrefix = "metal_p_"
	ownerCookieTTL    = 12 * time.Hour
)

// ownerCookieName is the owner cookie's name for player; over HTTPS it
// carries the __Host- prefix.
func ownerCookieName(player string, secure bool) string {
	sum := sha256.Sum256([]byte("metal-owner-name-v1." + player))
	name := ownerCookiePrefix + hex.EncodeToString(sum[:8])
	if secure {
		name = "__Host-" + name
	}
	return name
}

func (s *Server) ownerMAC(player string, exp int64) string {
	h := hmac.New(sha256.New, s.cfg.LinkKey)
	h.Write([]byte("metal-owner-cookie-v1."))
	h.Write([]byte(player))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(exp, 10)))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// secure reports whether the browser reached the gateway over HTTPS: its
// own TLS, an https -public-url, or a trusted proxy's X-Forwarded-Proto.
func (s *Server) secure(c echo.Context) bool {
	return c.Request().TLS != nil || strings.HasPrefix(s.cfg.PublicURL, "https://") ||
		(s.cfg.TrustProxy && c.Request().Header.Get("X-Forwarded-Proto") == "https")
}

// setOwner gives the browser the owner cookie for player. Over HTTPS its
// name carries the __Host- prefix: Secure, host-only, Path=/, so no sibling
// subdomain can plant one that shadows it.
func (s *Server) setOwner(c echo.Context, player string) {
	exp := time.Now().Add(ownerCookieTTL).Unix()
	val := base64.RawURLEncoding.EncodeToString([]byte(player)) + "." + strconv.FormatInt(exp, 10) + "." + s.ownerMAC(player, exp)
	secure := s.secure(c)
	c.SetCookie(&http.Cookie{
		Name: ownerCookieName(player, secure), Value: val, Path: "/", MaxAge: int(ownerCookieTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure,
	})
}

// owns reports whether the request carries a valid, unexpired owner cookie
// for player.
func (s *Server) owns(c echo.Context, player string) bool {
	if player == "" {
		return false
	}
	ck, err := c.Cookie(ownerCookieName(player, s.secure(c)))
	if err != nil || len(ck.Value) > 1024 {
		return false
	}
	parts := strings.Split(ck.Value, ".")
	if len(parts) != 3 {
		return false
	}
	who, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || string(who) != player {
		return false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(parts[2]), []byte(s.ownerMAC(player, exp)))
}

// guestPlayer names an open-mode guest by a hash of the id its browser
// keeps: the name shows in Nomad job meta and Consul, the id must not.
func guestPlayer(guest string) string {
	sum := sha256.Sum256([]byte("metal-guest-v1." + guest))
	return "guest-" + hex.EncodeToString(sum[:12])
}
