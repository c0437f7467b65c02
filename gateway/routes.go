package gateway

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/metal-stream/metal/internal/player"
)

//go:embed web
var webFS embed.FS

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// The client address for rate limits: the TCP peer, unless the operator
	// says a proxy in front sets X-Forwarded-For.
	e.IPExtractor = echo.ExtractIPDirect()
	if s.cfg.TrustProxy {
		e.IPExtractor = echo.ExtractIPFromXFFHeader()
	}
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover(), s.metrics.middleware)
	e.Use(middleware.BodyLimit("64K"))

	limit := middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
			Rate: rate.Limit(s.cfg.RatePerSecond), Burst: s.cfg.Burst, ExpiresIn: 3 * time.Minute,
		}),
		IdentifierExtractor: func(c echo.Context) (string, error) { return c.RealIP(), nil },
		DenyHandler: func(c echo.Context, _ string, _ error) error {
			c.Response().Header().Set("Retry-After", "1")
			return jsonError(c, http.StatusTooManyRequests, "too many requests from your address; slow down")
		},
		ErrorHandler: func(c echo.Context, _ error) error {
			return jsonError(c, http.StatusForbidden, "cannot tell your address")
		},
	})

	web, _ := fs.Sub(webFS, "web")
	e.GET("/", s.index)
	e.GET("/p/:link", s.playPage, limit)
	e.GET("/w/:share", s.watchPage, limit)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))
	e.GET("/static/player/*", echo.WrapHandler(http.StripPrefix("/static/player/", player.Handler())))
	e.GET("/static/*", echo.WrapHandler(http.StripPrefix("/static/", http.FileServerFS(web))))

	v1 := e.Group("/v1")
	v1.POST("/sessions", s.createSession, limit)
	v1.GET("/edges", s.listEdges)
	v1.GET("/sessions/:id", s.getSession)
	v1.DELETE("/sessions/:id", s.deleteSession)
	v1.GET("/sessions/:id/events", s.sessionEvents)
	v1.POST("/sessions/:id/whep", s.ownerWHEPPost, limit)
	v1.DELETE("/sessions/:id/whep/:res", s.ownerWHEPResource)
	v1.PATCH("/sessions/:id/whep/:res", s.ownerWHEPResource) // ICE restart (authorised, like DELETE: not the per-address limit)
	v1.POST("/sessions/:id/shares", s.createShare, limit)
	v1.GET("/sessions/:id/shares", s.listShares)
	v1.DELETE("/sessions/:id/shares/:share", s.revokeShare)
	v1.GET("/shares/:share", s.getShared, limit)
	v1.POST("/shares/:share/whep", s.sharedWHEPPost, limit)
	v1.DELETE("/shares/:share/whep/:res", s.sharedWHEPResource)
	v1.PATCH("/shares/:share/whep/:res", s.sharedWHEPResource)

	admin := v1.Group("/admin", s.adminAuth)
	admin.POST("/players", s.addPlayer)
	admin.GET("/players", s.listPlayers)
	admin.DELETE("/players/:name", s.revokePlayer)
	return e
}

// errorHandler answers echo's own errors (404, 405, 413) as JSON.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	if he, ok := err.(*echo.HTTPError); ok {
		code = he.Code
		if m, ok := he.Message.(string); ok {
			msg = m
		} else {
			msg = http.StatusText(code)
		}
	} else {
		s.log.Error("request failed", "path", c.Path(), "err", err)
	}
	_ = jsonError(c, code, "%s", msg)
}

func (s *Server) index(c echo.Context) error {
	name := "web/index.html"
	if s.cfg.OpenMode {
		name = "web/play.html"
	}
	b, err := webFS.ReadFile(name)
	if err != nil {
		return err
	}
	return c.HTMLBlob(http.StatusOK, b)
}

// playPage serves the player page for a link; the page itself asks for
// the session, so a bad link is answered there with a clear message.
func (s *Server) playPage(c echo.Context) error {
	b, err := webFS.ReadFile("web/play.html")
	if err != nil {
		return err
	}
	c.Response().Header().Set("Referrer-Policy", "no-referrer")
	return c.HTMLBlob(http.StatusOK, b)
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "leader": s.leading()})
}

// leader is the scheduler's leadership, where the placer has one.
type leader interface{ Leading() bool }

// leading reports whether this gateway holds the leader lock.
func (s *Server) leading() bool {
	l, ok := s.placer.(leader)
	return ok && l.Leading()
}

// readyz fails while any dependency check fails, naming the failing ones.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	failed := map[string]string{}
	for name, chk := range s.checks {
		if err := chk.Check(ctx); err != nil {
			failed[name] = err.Error()
		}
	}
	if !s.placer.Ready() {
		failed["scheduler"] = "loading sessions"
	}
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failed": failed})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
