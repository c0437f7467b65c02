package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/metal-stream/metal/scheduler"
)

// adminAuth requires the operator's admin token as a bearer token.
func (s *Server) adminAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.AdminToken == "" {
			return jsonError(c, http.StatusForbidden, "the admin API is disabled: start the gateway with -admin-token")
		}
		got, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="metal-admin"`)
			return jsonError(c, http.StatusUnauthorized, "admin token required")
		}
		return next(c)
	}
}

type addPlayerRequest struct {
	Name    string `json:"name"`
	Expires string `json:"expires,omitempty"` // a Go duration, "72h"; empty: never
}

// PlayerLink is the answer to issuing a player.
type PlayerLink struct {
	Name    string    `json:"name"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires,omitzero"`
}

func (s *Server) addPlayer(c echo.Context) error {
	var req addPlayerRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return jsonError(c, http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	var ttl time.Duration
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 {
			return jsonError(c, http.StatusBadRequest, "expires %q: want a positive duration such as 72h", req.Expires)
		}
		ttl = d
	}
	link, p, err := s.links.Issue(c.Request().Context(), req.Name, ttl, time.Now())
	if errors.Is(err, ErrBadPlayerName) {
		return jsonError(c, http.StatusBadRequest, "%v", err)
	}
	if err != nil {
		return jsonError(c, http.StatusServiceUnavailable, "%v", err)
	}
	return c.JSON(http.StatusCreated, PlayerLink{Name: p.Name, URL: s.URL() + "/p/" + link, Expires: p.Expires})
}

func (s *Server) listPlayers(c echo.Context) error {
	ps, err := s.players.ListPlayers(c.Request().Context())
	if err != nil {
		return jsonError(c, http.StatusServiceUnavailable, "%v", err)
	}
	type item struct {
		Name    string    `json:"name"`
		Created time.Time `json:"created"`
		Expires time.Time `json:"expires,omitzero"`
	}
	out := make([]item, 0, len(ps))
	for _, p := range ps {
		out = append(out, item{p.Name, p.Created, p.Expires})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return c.JSON(http.StatusOK, out)
}

func (s *Server) revokePlayer(c echo.Context) error {
	name := c.Param("name")
	if !playerName.MatchString(name) {
		return jsonError(c, http.StatusBadRequest, "%v", ErrBadPlayerName)
	}
	found, err := s.players.DeletePlayer(c.Request().Context(), name)
	if err != nil {
		return jsonError(c, http.StatusServiceUnavailable, "%v", err)
	}
	if !found {
		return jsonError(c, http.StatusNotFound, "no such player")
	}
	// Their owner cookies stay valid until they expire, but grant nothing
	// once the player's sessions are over, and the link that could start a
	// new one is gone.
	for _, id := range s.placer.SessionsOf(name) {
		if err := s.placer.Stop(c.Request().Context(), id, "player revoked"); err != nil && !errors.Is(err, scheduler.ErrNotFound) {
			return jsonError(c, http.StatusServiceUnavailable, "player revoked, but ending session %s failed: %v", id, err)
		}
	}
	return c.NoContent(http.StatusNoContent)
}
