package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Checker reports whether a dependency (Nomad, Consul) is usable; /readyz
// fails while any checker does.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context) error

// Check calls f.
func (f CheckerFunc) Check(ctx context.Context) error { return f(ctx) }

// Deps are the gateway's collaborators.
type Deps struct {
	// Placer runs sessions (the scheduler).
	Placer Placer
	// Players keeps issued player links.
	Players PlayerStore
	// TURN hands out relays per session; nil for none.
	TURN TURNProvider
	// Checks are named readiness checks for /readyz.
	Checks map[string]Checker
	// Shares keeps view-only share links.
	Shares ShareStore
	// Collectors are more metrics for /metrics (the scheduler's).
	Collectors []prometheus.Collector
}

// Server is the gateway's HTTP server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	echo     *echo.Echo
	ln       net.Listener
	checks   map[string]Checker
	registry *prometheus.Registry
	metrics  *metrics
	placer   Placer
	players  PlayerStore
	links    *links
	turn     TURNProvider
	shares   ShareStore

	// closing is closed when Run starts shutting down: progress streams
	// end at once instead of holding the graceful shutdown open.
	closing chan struct{}
}

// New builds a gateway.
func New(cfg Config, log *slog.Logger, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Placer == nil || deps.Players == nil || deps.Shares == nil {
		return nil, errors.New("gateway: a placer, a player store and a share store are required")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:      cfg,
		log:      log.With("component", "gateway"),
		checks:   deps.Checks,
		registry: prometheus.NewRegistry(),
		placer:   deps.Placer,
		players:  deps.Players,
		links:    &links{key: cfg.LinkKey, store: deps.Players},
		turn:     deps.TURN,
		shares:   deps.Shares,
		closing:  make(chan struct{}),
	}
	s.metrics = newMetrics(s.registry)
	for _, c := range deps.Collectors {
		if err := s.registry.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: metrics: %w", err)
		}
	}
	s.echo = s.routes()
	return s, nil
}

// Listen binds the listener; call it before Run. Tests listen on 127.0.0.1:0
// and read Addr.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the gateway's public base URL.
func (s *Server) URL() string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	if s.cfg.TLSCert != "" {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

// Handler is the gateway's HTTP handler, for tests that need no listener.
func (s *Server) Handler() http.Handler { return s.echo }

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLSCert != "" {
			errc <- srv.ServeTLS(s.ln, s.cfg.TLSCert, s.cfg.TLSKey)
			return
		}
		errc <- srv.Serve(s.ln)
	}()
	s.log.Info("gateway listening", "url", s.URL(), "open_mode", s.cfg.OpenMode)
	pruneCtx, stopPrune := context.WithCancel(ctx)
	defer stopPrune()
	go s.pruneLoop(pruneCtx, time.Minute)
	select {
	case err := <-errc:
		return fmt.Errorf("gateway serve: %w", err)
	case <-ctx.Done():
	}
	close(s.closing)
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("gateway shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("gateway serve: %w", err)
	}
	return nil
}
