package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metal-stream/metal/scheduler"
)

// countingPlacer admits everything and counts admissions: the fuzz target
// asks thousands of times a second whether a bad body reached admission,
// which the real scheduler on Nomad cannot answer at that rate.
type countingPlacer struct{ enqueued atomic.Int64 }

func (p *countingPlacer) Enqueue(_ context.Context, player string, _ scheduler.Prefs) (scheduler.Status, bool, error) {
	p.enqueued.Add(1)
	return scheduler.Status{ID: strings.Repeat("a", 32), Player: player, State: scheduler.StateQueued, Position: 1}, true, nil
}
func (p *countingPlacer) Edges() []scheduler.Edge { return nil }
func (p *countingPlacer) Get(string) (scheduler.Status, error) {
	return scheduler.Status{}, scheduler.ErrNotFound
}
func (p *countingPlacer) Stop(context.Context, string, string) error { return scheduler.ErrNotFound }
func (p *countingPlacer) Touch(string)                               {}
func (p *countingPlacer) Watch(string) func()                        { return func() {} }
func (p *countingPlacer) Changed() <-chan struct{}                   { return make(chan struct{}) }
func (p *countingPlacer) SessionKey(string) []byte                   { return []byte(testKey) }
func (p *countingPlacer) Ready() bool                                { return true }
func (p *countingPlacer) SessionsOf(string) []string                 { return nil }

type noPlayers struct{}

func (noPlayers) PutPlayer(context.Context, Player) error { return nil }
func (noPlayers) GetPlayer(context.Context, string) (Player, bool, error) {
	return Player{}, false, nil
}
func (noPlayers) ListPlayers(context.Context) ([]Player, error)      { return nil, nil }
func (noPlayers) DeletePlayer(context.Context, string) (bool, error) { return false, nil }
func (noPlayers) DeleteExpired(context.Context, string, time.Time) (bool, error) {
	return false, nil
}

type noShares struct{}

func (noShares) PutShare(context.Context, Share) error                 { return nil }
func (noShares) GetShare(context.Context, string) (Share, bool, error) { return Share{}, false, nil }
func (noShares) DeleteShare(context.Context, string) error             { return nil }
func (noShares) ListShares(context.Context) ([]Share, error)           { return nil, nil }

// FuzzCreateSession: any body and content type sent to POST /v1/sessions
// gets an answer below 500; every 4xx leaves admission untouched (nothing
// queued, no cookie), and only a 2xx admits exactly one session. Nothing
// panics.
func FuzzCreateSession(f *testing.F) {
	for _, s := range []struct{ ctype, body string }{
		{"application/json", `{"guest":"abcdefgh12"}`},
		{"application/json", `{"guest":"abcdefgh12","rtt":{"dc1":12.5},"avoid":["dc2"]}`},
		{"application/json", `{"link":"x.y"}`},
		{"application/json", `{"guest":"short"}`},
		{"application/json", `{"rtt":{"dc1":-1}}`},
		{"text/plain", `{}`},
		{"application/json", `{"guest":"abcdefgh12"} trailing`},
		{"application/json; charset=utf-8", `{"guest":"abcdefgh12","unknown":1}`},
	} {
		f.Add(s.ctype, s.body)
	}
	p := &countingPlacer{}
	cfg := DefaultConfig()
	cfg.LinkKey, cfg.OpenMode, cfg.RatePerSecond, cfg.Burst = []byte(testKey), true, 1e9, 1<<30
	s, err := New(cfg, quietLogger(), Deps{Placer: p, Players: noPlayers{}, Shares: noShares{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ctype, body string) {
		before := p.enqueued.Load()
		req := httptest.NewRequest(http.MethodPost, "/v1/sessions", strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:4000"
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		admitted := p.enqueued.Load() - before
		switch {
		case rec.Code >= 500:
			t.Fatalf("%q %q = %d %s", ctype, body, rec.Code, rec.Body)
		case rec.Code >= 400 && (admitted != 0 || rec.Header().Get("Set-Cookie") != ""):
			t.Fatalf("%q %q = %d but admitted %d (cookie %q)", ctype, body, rec.Code, admitted, rec.Header().Get("Set-Cookie"))
		case rec.Code < 300 && admitted != 1:
			t.Fatalf("%q %q = %d with %d admissions", ctype, body, rec.Code, admitted)
		}
	})
}
