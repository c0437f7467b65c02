package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestServer(t *testing.T, checks map[string]Checker) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	s, err := New(cfg, quietLogger(), checks)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHealthAndReadiness(t *testing.T) {
	down := CheckerFunc(func(context.Context) error { return errors.New("connection refused") })
	up := CheckerFunc(func(context.Context) error { return nil })
	tests := []struct {
		name     string
		checks   map[string]Checker
		path     string
		wantCode int
		wantBody string
	}{
		{"healthz", nil, "/healthz", 200, `"ok"`},
		{"ready when all up", map[string]Checker{"nomad": up, "consul": up}, "/readyz", 200, `"ready"`},
		{"not ready names the failing check", map[string]Checker{"nomad": up, "consul": down}, "/readyz", 503, `"consul":"connection refused"`},
		{"index page", nil, "/", 200, "Metal gateway"},
		{"unknown path", nil, "/nope", 404, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.checks)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("GET %s = %d %s, want %d containing %s", tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestMetricsUseRouteTemplates(t *testing.T) {
	s := newTestServer(t, nil)
	for _, p := range []string{"/healthz", "/secret-player-link-123"} {
		s.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, p, nil))
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	if !strings.Contains(body, `metal_gateway_http_requests_total{code="200",route="/healthz"} 1`) {
		t.Fatalf("metrics lack the healthz counter:\n%s", body)
	}
	if strings.Contains(body, "secret-player-link") {
		t.Fatal("raw path leaked into metric labels")
	}
}

func TestRunServesAndStops(t *testing.T) {
	s := newTestServer(t, nil)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body["status"] != "ok" {
		t.Fatalf("healthz body %v", body)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestConfigValidateNamesFlag(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "nope"}, "-listen"},
		{Config{Listen: ":1", PublicURL: "ftp://x"}, "-public-url"},
	} {
		if err := tt.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want mention of %s", tt.cfg, err, tt.want)
		}
	}
}
