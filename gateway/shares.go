package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/labstack/echo/v4"

	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/scheduler"
)

// Share links: spectators only by the owner's choice. The owner creates a
// view-only link (POST /v1/sessions/:id/shares), which expires (at most
// maxShareTTL) and can be revoked (DELETE .../shares/:share) at any time.
// Its id (128 random bits) is the capability: /w/<share> shows the stream,
// and the gateway forwards the spectator's WHEP offer with a single-use
// viewer token, so the spectator sees and hears and cannot send input. This
// is the only way to a viewer token.

const (
	defaultShareTTL = time.Hour
	maxShareTTL     = 24 * time.Hour
	maxShares       = 16 // per session
)

var shareIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Share is one view-only link. Only its creation answer carries the ID
// and URL; the store keeps neither (a listing shows Ref, a hash prefix).
type Share struct {
	ID      string    `json:"id,omitempty"`
	Ref     string    `json:"ref,omitempty"`
	Session string    `json:"session"`
	Expires time.Time `json:"expires"`
	URL     string    `json:"url,omitempty"`
}

// ShareStore keeps share links where every gateway sees them.
type ShareStore interface {
	PutShare(ctx context.Context, sh Share) error
	GetShare(ctx context.Context, id string) (Share, bool, error)
	DeleteShare(ctx context.Context, id string) error
	ListShares(ctx context.Context) ([]Share, error)
}

// ConsulShares keeps share links in Consul KV under Prefix, each under a
// hash of its id: KV keys are visible to anyone with catalog access, and the
// id is the capability.
type ConsulShares struct {
	KV     *consul.KV
	Prefix string // "metal/shares/"
}

func (c *ConsulShares) key(id string) string { return c.Prefix + shareRef(id) }

// shareRef is what the store knows a share by: the SHA-256 of its id.
func shareRef(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// PutShare writes a share, without its id.
func (c *ConsulShares) PutShare(ctx context.Context, sh Share) error {
	key := c.key(sh.ID)
	sh.ID, sh.URL, sh.Ref = "", "", ""
	b, err := json.Marshal(sh)
	if err != nil {
		return err
	}
	if _, err := c.KV.Put(&consul.KVPair{Key: key, Value: b}, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("store share: %w", err)
	}
	return nil
}

// GetShare reads a share (stale reads allowed).
func (c *ConsulShares) GetShare(ctx context.Context, id string) (Share, bool, error) {
	kv, _, err := c.KV.Get(c.key(id), (&consul.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil || kv == nil {
		return Share{}, false, err
	}
	var sh Share
	if err := json.Unmarshal(kv.Value, &sh); err != nil || sh.Session == "" {
		return Share{}, false, nil
	}
	sh.ID, sh.Ref = id, shareRef(id)
	return sh, true, nil
}

// DeleteShare revokes a share, by its id or (from a listing) its ref.
func (c *ConsulShares) DeleteShare(ctx context.Context, idOrRef string) error {
	key := c.key(idOrRef)
	if len(idOrRef) == 64 {
		key = c.Prefix + idOrRef
	}
	if _, err := c.KV.Delete(key, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete share: %w", err)
	}
	return nil
}

// ListShares lists every share.
func (c *ConsulShares) ListShares(ctx context.Context) ([]Share, error) {
	pairs, _, err := c.KV.List(c.Prefix, (&consul.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	var out []Share
	for _, p := range pairs {
		var sh Share
		if json.Unmarshal(p.Value, &sh) == nil && sh.Session != "" {
			sh.Ref = strings.TrimPrefix(p.Key, c.Prefix)
			out = append(out, sh)
		}
	}
	return out, nil
}

type shareRequest struct {
	TTLSeconds int `json:"ttl_seconds,omitempty"`
}

// sessionShares lists the owner's live share links of a session.
func (s *Server) sessionShares(ctx context.Context, session string) ([]Share, error) {
	all, err := s.shares.ListShares(ctx)
	if err != nil {
		return nil, err
	}
	out := []Share{}
	for _, sh := range all {
		if sh.Session != session {
			continue
		}
		if time.Now().After(sh.Expires) {
			_ = s.shares.DeleteShare(ctx, sh.Ref) // expired: forget it
			continue
		}
		out = append(out, sh)
	}
	return out, nil
}

// createShare: POST /v1/sessions/:id/shares {"ttl_seconds": 3600}.
func (s *Server) createShare(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	if st.State.Terminal() {
		return errNoSession
	}
	var req shareRequest
	if c.Request().ContentLength != 0 {
		dec := json.NewDecoder(io.LimitReader(c.Request().Body, 1024))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("invalid JSON body: %v", err))
		}
		if err := dec.Decode(&struct{}{}); err != io.EOF {
			return echo.NewHTTPError(http.StatusBadRequest, "invalid JSON body: trailing data after the object")
		}
	}
	ttl := defaultShareTTL
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 0 || req.TTLSeconds > int(maxShareTTL.Seconds()) {
			return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("ttl_seconds must be between 1 and %d", int(maxShareTTL.Seconds())))
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	existing, err := s.sessionShares(c.Request().Context(), st.ID)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "share store unavailable")
	}
	if len(existing) >= maxShares {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("at most %d share links per session: revoke one", maxShares))
	}
	sh := Share{ID: randomHex(16), Session: st.ID, Expires: time.Now().Add(ttl).UTC().Truncate(time.Second)}
	if err := s.shares.PutShare(c.Request().Context(), sh); err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "share store unavailable")
	}
	sh.URL = s.URL() + "/w/" + sh.ID
	return c.JSON(http.StatusCreated, sh)
}

// listShares: GET /v1/sessions/:id/shares.
func (s *Server) listShares(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	out, err := s.sessionShares(c.Request().Context(), st.ID)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "share store unavailable")
	}
	return c.JSON(http.StatusOK, out)
}

// revokeShare: DELETE /v1/sessions/:id/shares/:share.
func (s *Server) revokeShare(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	id := c.Param("share")
	sh, ok, err := s.lookupShare(c, id)
	if err != nil {
		return err
	}
	if !ok || sh.Session != st.ID {
		return echo.NewHTTPError(http.StatusNotFound, "no such share link")
	}
	if err := s.shares.DeleteShare(c.Request().Context(), id); err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "share store unavailable")
	}
	// Spectators already watching are cut off too; those whose links are
	// still valid reconnect on their own.
	if err := s.dropViewers(c.Request().Context(), st); err != nil {
		s.log.Warn("drop spectators after a revoke", "session", st.ID, "err", err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) lookupShare(c echo.Context, id string) (Share, bool, error) {
	if !shareIDPattern.MatchString(id) {
		return Share{}, false, nil
	}
	sh, ok, err := s.shares.GetShare(c.Request().Context(), id)
	if err != nil {
		return Share{}, false, echo.NewHTTPError(http.StatusServiceUnavailable, "share store unavailable")
	}
	if !ok || time.Now().After(sh.Expires) {
		return Share{}, false, nil
	}
	return sh, true, nil
}

// sharedSession is the session a valid share link in the path shows.
func (s *Server) sharedSession(c echo.Context) (Share, scheduler.Status, error) {
	sh, ok, err := s.lookupShare(c, c.Param("share"))
	if err != nil {
		return Share{}, scheduler.Status{}, err
	}
	if !ok {
		return Share{}, scheduler.Status{}, echo.NewHTTPError(http.StatusNotFound, "no such share link (expired or revoked)")
	}
	st, err := s.placer.Get(sh.Session)
	if errors.Is(err, scheduler.ErrNotFound) || (err == nil && st.State.Terminal()) {
		return Share{}, scheduler.Status{}, echo.NewHTTPError(http.StatusNotFound, "the shared session is over")
	}
	if errors.Is(err, scheduler.ErrUnavailable) {
		return Share{}, scheduler.Status{}, storeUnavailable(c)
	}
	if err != nil {
		return Share{}, scheduler.Status{}, err
	}
	return sh, st, nil
}

// getShared: GET /v1/shares/:share, what a spectator's page polls. It
// shows the state and, once ready, where to send the offer; no player
// details, and it does not keep the session alive.
func (s *Server) getShared(c echo.Context) error {
	sh, st, err := s.sharedSession(c)
	if err != nil {
		return err
	}
	// Each spectator's TURN credentials name a viewer of their own: the
	// relays' per-username quota is the owner's alone, and spectators
	// cannot use it up (a relay-only browser takes up to three relays,
	// one per TURN URL).
	v := s.view(c.Request().Context(), st, "/v1/shares/"+sh.ID+"/whep", spectatorTURNUser(st.ID))
	v.RTT, v.Choice, v.Node, v.Replacement = nil, "", "", ""
	return c.JSON(http.StatusOK, v)
}

// sharedWHEPPost forwards a spectator's offer with a viewer token.
func (s *Server) sharedWHEPPost(c echo.Context) error {
	sh, st, err := s.sharedSession(c)
	if err != nil {
		return err
	}
	return s.forwardWHEP(c, st, token.RoleViewer, "", "/v1/shares/"+sh.ID+"/whep")
}

// sharedWHEPResource ends (DELETE) or restarts ICE on (PATCH) a
// spectator's WHEP session.
func (s *Server) sharedWHEPResource(c echo.Context) error {
	sh, st, err := s.sharedSession(c)
	if err != nil {
		return err
	}
	return s.forwardWHEP(c, st, token.RoleViewer, c.Param("res"), "/v1/shares/"+sh.ID+"/whep")
}

// watchPage serves the spectator page for a share link.
func (s *Server) watchPage(c echo.Context) error {
	b, err := webFS.ReadFile("web/watch.html")
	if err != nil {
		return err
	}
	c.Response().Header().Set("Referrer-Policy", "no-referrer")
	return c.HTMLBlob(http.StatusOK, b)
}

// spectatorTURNUser names a spectator of session in its TURN credentials:
// a viewer of its own, never the session itself.
func spectatorTURNUser(session string) string { return session + "-w" + randomHex(4) }

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
