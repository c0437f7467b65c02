package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
	"github.com/metal-stream/metal/scheduler"
)

func TestMain(m *testing.M) {
	clustertest.Main(m, clustertest.Options{VerifyLeaks: true})
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const testKey = "gateway-test-key-0123456789abcdef-xyz"

// newTestServer builds a gateway on the package's real Consul and Nomad,
// with a real scheduler under a KV prefix of its own.
func newTestServer(t *testing.T, mutate func(*Config), checks map[string]Checker) *Server {
	t.Helper()
	return newTestServerWith(t, mutate, checks, nil)
}

// newTestServerWith is newTestServer with the scheduler's config changed too.
func newTestServerWith(t *testing.T, mutate func(*Config), checks map[string]Checker, smutate func(*scheduler.Config)) *Server {
	t.Helper()
	c := clustertest.Cluster(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.LinkKey = []byte(testKey)
	cfg.AdminToken = "admin-token-0123456789"
	cfg.RatePerSecond, cfg.Burst = 1000, 1000
	if mutate != nil {
		mutate(&cfg)
	}
	hcl, _ := jobs.Read("streamer.nomad.hcl")
	sc := scheduler.DefaultConfig()
	sc.JobHCL, sc.MasterKey = hcl, []byte(testKey)
	sc.KVPrefix = "metal-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "/sessions/"
	sc.JobVars = map[string]any{"driver": "raw_exec", "gpu": false, "metal_binary": "/bin/false"}
	if smutate != nil {
		smutate(&sc)
	}
	sched, err := scheduler.New(sc, c.Nomad, c.Consul, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = sched.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for !sched.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	s, err := New(cfg, quietLogger(), Deps{
		Placer:  sched,
		Players: &ConsulPlayers{KV: c.Consul.KV(), Prefix: "metal-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "/players/"},
		Shares:  &ConsulShares{KV: c.Consul.KV(), Prefix: "metal-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "/shares/"},
		Checks:  checks,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	return s
}

func do(t *testing.T, s *Server, method, path, ctype, auth, body string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for _, c := range cookies {
		req.AddCookie(c)
	}
	req.RemoteAddr = "127.0.0.1:4000"
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
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
		{"unknown path is JSON", nil, "/nope", 404, `{"error":"Not Found"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil, tt.checks)
			rec := do(t, s, http.MethodGet, tt.path, "", "", "")
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("GET %s = %d %s, want %d containing %s", tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestMetricsUseRouteTemplates(t *testing.T) {
	s := newTestServer(t, nil, nil)
	do(t, s, http.MethodGet, "/healthz", "", "", "")
	do(t, s, http.MethodGet, "/p/secret-player-link-123", "", "", "")
	body := do(t, s, http.MethodGet, "/metrics", "", "", "").Body.String()
	if !strings.Contains(body, `metal_gateway_http_requests_total{code="200",route="/healthz"} 1`) {
		t.Fatalf("metrics lack the healthz counter:\n%s", body)
	}
	if strings.Contains(body, "secret-player-link") {
		t.Fatal("raw path leaked into metric labels")
	}
}

func TestRunServesAndStops(t *testing.T) {
	s := newTestServer(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestConfigValidateNamesFlag(t *testing.T) {
	good := DefaultConfig()
	good.LinkKey = []byte(testKey)
	for _, tt := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Listen = "nope" }, "-listen"},
		{func(c *Config) { c.PublicURL = "ftp://x" }, "-public-url"},
		{func(c *Config) { c.LinkKey = []byte("short") }, "-link-key"},
		{func(c *Config) { c.AdminToken = "short" }, "-admin-token"},
		{func(c *Config) { c.Burst = 0 }, "-burst"},
	} {
		c := good
		tt.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate = %v, want mention of %s", err, tt.want)
		}
	}
}

// TestBadRequestsChangeNothing sends malformed, oversized and unauthorised
// requests and checks each gets a clear 4xx and that Nomad and Consul hold
// nothing new afterwards.
func TestBadRequestsChangeNothing(t *testing.T) {
	s := newTestServer(t, nil, nil)
	c := clustertest.Cluster(t)
	forged := "eyJuIjoiYSJ9.AAAA"
	tests := []struct {
		name, method, path, ctype, auth, body string
		want                                  int
		wantText                              string
	}{
		{"no link", "POST", "/v1/sessions", "application/json", "", `{}`, 401, "player link is required"},
		{"forged link", "POST", "/v1/sessions", "application/json", "", `{"link":"` + forged + `"}`, 401, "invalid or revoked"},
		{"guest outside open mode", "POST", "/v1/sessions", "application/json", "", `{"guest":"abcdefgh1"}`, 401, "player link is required"},
		{"wrong content type", "POST", "/v1/sessions", "text/plain", "", `{}`, 415, "application/json"},
		{"negative rtt", "POST", "/v1/sessions", "application/json", "", `{"link":"x","rtt":{"edge-1":-5}}`, 400, "not between 0 and 60000"},
		{"bad edge name", "POST", "/v1/sessions", "application/json", "", `{"link":"x","rtt":{"../etc":5}}`, 400, "bad edge name"},
		{"bad avoid", "POST", "/v1/sessions", "application/json", "", `{"link":"x","avoid":["a b"]}`, 400, "bad edge name"},
		{"malformed JSON", "POST", "/v1/sessions", "application/json", "", `{"link":`, 400, "invalid JSON"},
		{"unknown field", "POST", "/v1/sessions", "application/json", "", `{"link":"x","admin":true}`, 400, "unknown field"},
		{"oversized", "POST", "/v1/sessions", "application/json", "", `{"link":"` + strings.Repeat("a", 70<<10) + `"}`, 413, ""},
		{"malformed session id", "GET", "/v1/sessions/../../etc", "", "", "", 404, ""},
		{"bad session id", "GET", "/v1/sessions/XYZ", "", "", "", 400, "malformed session id"},
		{"unknown session", "GET", "/v1/sessions/0123456789abcdef0123456789abcdef", "", "", "", 404, "no such session"},
		{"delete unknown", "DELETE", "/v1/sessions/0123456789abcdef0123456789abcdef", "", "", "", 404, "no such session"},
		{"events unknown", "GET", "/v1/sessions/0123456789abcdef0123456789abcdef/events", "", "", "", 404, "no such session"},
		{"admin without token", "POST", "/v1/admin/players", "application/json", "", `{"name":"a"}`, 401, "admin token required"},
		{"admin wrong token", "GET", "/v1/admin/players", "", "wrong-token-0123456789", "", 401, "admin token required"},
		{"bad player name", "POST", "/v1/admin/players", "application/json", "admin-token-0123456789", `{"name":"Bad Name!"}`, 400, "player name must be"},
		{"bad expiry", "POST", "/v1/admin/players", "application/json", "admin-token-0123456789", `{"name":"a","expires":"soon"}`, 400, "positive duration"},
		{"revoke unknown", "DELETE", "/v1/admin/players/nobody", "", "admin-token-0123456789", "", 404, "no such player"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, s, tt.method, tt.path, tt.ctype, tt.auth, tt.body)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.wantText) {
				t.Fatalf("%s %s = %d %s, want %d containing %q", tt.method, tt.path, rec.Code, rec.Body, tt.want, tt.wantText)
			}
			if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("error body is not JSON: %s", rec.Body)
			}
		})
	}
	jobs, _, err := c.Nomad.Jobs().List(nil)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("Nomad jobs after bad requests: %v %v", jobs, err)
	}
	keys, _, err := c.Consul.KV().Keys("metal-test/"+t.Name()+"/sessions/", "", nil)
	if err != nil || len(keys) != 0 {
		t.Fatalf("session records after bad requests: %v %v", keys, err)
	}
}

// TestPlayerLinks issues a link through the admin API, starts a session with
// it, then revokes it.
func TestPlayerLinks(t *testing.T) {
	s := newTestServer(t, nil, nil)
	admin := "admin-token-0123456789"
	rec := do(t, s, "POST", "/v1/admin/players", "application/json", admin, `{"name":"alice","expires":"1h"}`)
	if rec.Code != 201 {
		t.Fatalf("add player = %d %s", rec.Code, rec.Body)
	}
	var pl PlayerLink
	_ = json.Unmarshal(rec.Body.Bytes(), &pl)
	link := pl.URL[strings.LastIndex(pl.URL, "/p/")+3:]
	if len(link) < 40 || !strings.HasPrefix(pl.URL, s.URL()+"/p/") {
		t.Fatalf("link URL %q", pl.URL)
	}
	if page := do(t, s, "GET", "/p/"+link, "", "", ""); page.Code != 200 || !strings.Contains(page.Body.String(), "play.js") {
		t.Fatalf("player page = %d", page.Code)
	}
	// A tampered link is refused.
	tampered := link[:len(link)-2] + "AA"
	if rec := do(t, s, "POST", "/v1/sessions", "application/json", "", `{"link":"`+tampered+`"}`); rec.Code != 401 {
		t.Fatalf("tampered link = %d %s", rec.Code, rec.Body)
	}
	// The link works, and asking twice resumes the same session.
	rec = do(t, s, "POST", "/v1/sessions", "application/json", "", `{"link":"`+link+`"}`)
	if rec.Code != 201 && rec.Code != 202 {
		t.Fatalf("create with link = %d %s", rec.Code, rec.Body)
	}
	var v1, v2 SessionView
	_ = json.Unmarshal(rec.Body.Bytes(), &v1)
	rec = do(t, s, "POST", "/v1/sessions", "application/json", "", `{"link":"`+link+`"}`)
	_ = json.Unmarshal(rec.Body.Bytes(), &v2)
	if rec.Code != 200 || v1.ID == "" || v1.ID != v2.ID {
		t.Fatalf("second request = %d %s; want 200 resuming %s", rec.Code, rec.Body, v1.ID)
	}
	owner := ownerCookieOf(t, rec)
	if rec := do(t, s, "DELETE", "/v1/sessions/"+v1.ID, "", "", "", owner); rec.Code != 204 {
		t.Fatalf("delete = %d %s", rec.Code, rec.Body)
	}
	list := do(t, s, "GET", "/v1/admin/players", "", admin, "")
	if !bytes.Contains(list.Body.Bytes(), []byte(`"name":"alice"`)) {
		t.Fatalf("player list %s", list.Body)
	}
	if rec := do(t, s, "DELETE", "/v1/admin/players/alice", "", admin, ""); rec.Code != 204 {
		t.Fatalf("revoke = %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "POST", "/v1/sessions", "application/json", "", `{"link":"`+link+`"}`); rec.Code != 401 {
		t.Fatalf("revoked link = %d %s", rec.Code, rec.Body)
	}
}

func TestRateLimitPerClientIP(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.RatePerSecond, c.Burst = 0.001, 3 }, nil)
	codes := map[int]int{}
	for range 6 {
		codes[do(t, s, "POST", "/v1/sessions", "application/json", "", `{}`).Code]++
	}
	if codes[429] != 3 || codes[401] != 3 {
		t.Fatalf("codes %v, want 3 answered then 3 rate-limited", codes)
	}
	// X-Forwarded-For is not trusted by default: a spoofed header does not
	// buy a new budget.
	req := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{}`))
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 429 {
		t.Fatalf("spoofed X-Forwarded-For got %d, want 429", rec.Code)
	}
}

func ownerCookieOf(t *testing.T, rec *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range rec.Result().Cookies() {
		if strings.HasPrefix(c.Name, ownerCookiePrefix) {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Fatalf("owner cookie %+v: want HttpOnly and SameSite=Strict", c)
			}
			return c
		}
	}
	t.Fatalf("no owner cookie in %v", rec.Result().Header["Set-Cookie"])
	return nil
}

// TestSessionIsItsPlayers: the session id is not a credential. Without the
// owner cookie of the session's player, reading the session, its progress,
// stopping it, offering WHEP and sharing it all answer 404, exactly as for
// a session that does not exist, and nothing changes; a forged or another
// player's cookie is no better. With it, all of them work, and a share
// link shows the session to anyone holding it until it is revoked.
func TestSessionIsItsPlayers(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.OpenMode = true }, nil)
	rec := do(t, s, "POST", "/v1/sessions", "application/json", "", `{"guest":"alice-browser-0001"}`)
	if rec.Code != 201 && rec.Code != 202 {
		t.Fatalf("create = %d %s", rec.Code, rec.Body)
	}
	var v SessionView
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	alice := ownerCookieOf(t, rec)
	rec = do(t, s, "POST", "/v1/sessions", "application/json", "", `{"guest":"mallory-browser-01"}`)
	mallory := ownerCookieOf(t, rec)
	forged := &http.Cookie{Name: alice.Name, Value: alice.Value[:len(alice.Value)-3] + "AAA"}
	// Mallory's cookie under Alice's cookie name: valid, but for Mallory.
	swapped := &http.Cookie{Name: alice.Name, Value: mallory.Value}
	missing := "/v1/sessions/" + strings.Repeat("0", 32)

	strangers := map[string][]*http.Cookie{"no cookie": nil, "another player": {mallory}, "forged": {forged}, "swapped": {swapped}}
	for who, cookies := range strangers {
		for _, r := range []struct{ method, path, ctype, body string }{
			{"GET", "/v1/sessions/" + v.ID, "", ""},
			{"GET", "/v1/sessions/" + v.ID + "/events", "", ""},
			{"DELETE", "/v1/sessions/" + v.ID, "", ""},
			{"POST", "/v1/sessions/" + v.ID + "/whep", "application/sdp", "v=0"},
			{"DELETE", "/v1/sessions/" + v.ID + "/whep/" + strings.Repeat("a", 32), "", ""},
			{"POST", "/v1/sessions/" + v.ID + "/shares", "application/json", `{}`},
			{"GET", "/v1/sessions/" + v.ID + "/shares", "", ""},
		} {
			got := do(t, s, r.method, r.path, r.ctype, "", r.body, cookies...)
			// The same answer as for a session that does not exist.
			none := do(t, s, r.method, strings.Replace(r.path, "/v1/sessions/"+v.ID, missing, 1), r.ctype, "", r.body, alice)
			if got.Code != 404 || got.Body.String() != none.Body.String() {
				t.Errorf("%s: %s %s = %d %s, want 404 %s", who, r.method, r.path, got.Code, got.Body, none.Body)
			}
		}
	}
	// Nothing changed: the session lives on and no share was made.
	rec = do(t, s, "GET", "/v1/sessions/"+v.ID, "", "", "", alice)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), `"state":"ended"`) {
		t.Fatalf("owner reads the session after strangers tried: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/sessions/"+v.ID+"/shares", "", "", "", alice); rec.Body.String() != "[]\n" {
		t.Fatalf("shares after strangers tried: %s", rec.Body)
	}

	// The owner shares; the link shows the session without any cookie.
	rec = do(t, s, "POST", "/v1/sessions/"+v.ID+"/shares", "application/json", "", `{"ttl_seconds":600}`, alice)
	if rec.Code != 201 {
		t.Fatalf("share = %d %s", rec.Code, rec.Body)
	}
	var sh Share
	_ = json.Unmarshal(rec.Body.Bytes(), &sh)
	if !strings.HasSuffix(sh.URL, "/w/"+sh.ID) || time.Until(sh.Expires) > 601*time.Second {
		t.Fatalf("share %+v", sh)
	}
	if rec := do(t, s, "GET", "/v1/shares/"+sh.ID, "", "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), v.ID) {
		t.Fatalf("spectator reads the share = %d %s", rec.Code, rec.Body)
	}
	// KV, which catalog readers see, never holds the capability itself.
	pairs, _, err := clustertest.Cluster(t).Consul.KV().List("metal-test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if strings.Contains(p.Key, sh.ID) || strings.Contains(string(p.Value), sh.ID) {
			t.Fatalf("the share id is readable in Consul KV at %s", p.Key)
		}
	}
	if rec := do(t, s, "GET", "/w/"+sh.ID, "", "", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), "watch.js") {
		t.Fatalf("watch page = %d", rec.Code)
	}
	// A share link is no owner cookie: the spectator cannot read, stop or
	// share the session itself.
	if rec := do(t, s, "DELETE", "/v1/sessions/"+v.ID, "", "", ""); rec.Code != 404 {
		t.Fatalf("spectator stops the session = %d", rec.Code)
	}
	for _, bad := range []string{`{"ttl_seconds":-5}`, `{"ttl_seconds":999999}`, `{"ttl":1}`, `nope`} {
		if rec := do(t, s, "POST", "/v1/sessions/"+v.ID+"/shares", "application/json", "", bad, alice); rec.Code != 400 {
			t.Errorf("share with %s = %d %s, want 400", bad, rec.Code, rec.Body)
		}
	}
	// Revoked: the link is dead at once.
	if rec := do(t, s, "DELETE", "/v1/sessions/"+v.ID+"/shares/"+sh.ID, "", "", "", alice); rec.Code != 204 {
		t.Fatalf("revoke = %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/v1/shares/"+sh.ID, "", "", ""); rec.Code != 404 {
		t.Fatalf("revoked share = %d %s, want 404", rec.Code, rec.Body)
	}
	if rec := do(t, s, "POST", "/v1/shares/"+sh.ID+"/whep", "application/sdp", "", "v=0"); rec.Code != 404 {
		t.Fatalf("WHEP through a revoked share = %d, want 404", rec.Code)
	}
	// The owner stops the session.
	if rec := do(t, s, "DELETE", "/v1/sessions/"+v.ID, "", "", "", alice); rec.Code != 204 {
		t.Fatalf("owner stops = %d %s", rec.Code, rec.Body)
	}
}

// TestShutdownEndsProgressStreams: a gateway shutting down ends its
// server-sent event streams at once rather than waiting out the graceful
// shutdown's 10 seconds with them open.
func TestShutdownEndsProgressStreams(t *testing.T) {
	// A streamer no node has room for: the session stays queued, and its
	// progress stream open, until the gateway shuts down.
	s := newTestServerWith(t, func(c *Config) { c.OpenMode = true }, nil, func(sc *scheduler.Config) { sc.JobVars["cpu"] = 1000000 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	rec := do(t, s, "POST", "/v1/sessions", "application/json", "", `{"guest":"shutdown-test-01"}`)
	var v SessionView
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	owner := ownerCookieOf(t, rec)
	req, _ := http.NewRequest("GET", s.URL()+"/v1/sessions/"+v.ID+"/events", nil)
	req.AddCookie(owner)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", err, resp)
	}
	ended := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, resp.Body); close(ended) }()
	select {
	case <-ended:
		t.Fatal("the progress stream of a queued session ended before the shutdown")
	case <-time.After(time.Second):
	}
	start := time.Now()
	cancel()
	select {
	case <-ended:
	case <-time.After(8 * time.Second):
		t.Fatal("the progress stream outlived the shutdown")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("stream ended and Run returned %s after shutdown began", time.Since(start).Round(time.Millisecond))
}

// storeAway is the real scheduler whose session store does not answer for
// one id, as scheduler.Get reports a Consul outage for a session this
// gateway has not seen yet (scheduler's TestGetDuringConsulOutage drives
// the real one through a cut line).
type storeAway struct {
	Placer
	id string
}

func (p storeAway) Get(id string) (scheduler.Status, error) {
	if id == p.id {
		return scheduler.Status{}, fmt.Errorf("%w: consul: connection refused", scheduler.ErrUnavailable)
	}
	return p.Placer.Get(id)
}

// TestSessionStoreAwayIsRetried: a session route during a Consul outage
// answers 503 with Retry-After, the same to owner and stranger (it says
// nothing about the id), never the 404 that ends a player's page.
func TestSessionStoreAwayIsRetried(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.OpenMode = true }, nil)
	rec := do(t, s, "POST", "/v1/sessions", "application/json", "", `{"guest":"alice-browser-0001"}`)
	if rec.Code != 201 && rec.Code != 202 {
		t.Fatalf("create = %d %s", rec.Code, rec.Body)
	}
	var v SessionView
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	alice := ownerCookieOf(t, rec)
	rec = do(t, s, "POST", "/v1/sessions/"+v.ID+"/shares", "application/json", "", `{}`, alice)
	var sh Share
	if err := json.Unmarshal(rec.Body.Bytes(), &sh); err != nil || sh.ID == "" {
		t.Fatalf("share = %d %s", rec.Code, rec.Body)
	}
	s.placer = storeAway{Placer: s.placer, id: v.ID}
	// A spectator's page polls its share: 503, retried, not a 500.
	if got := do(t, s, "GET", "/v1/shares/"+sh.ID, "", "", ""); got.Code != http.StatusServiceUnavailable || got.Header().Get("Retry-After") == "" {
		t.Errorf("GET /v1/shares/%s = %d %q %s, want 503 with Retry-After", sh.ID, got.Code, got.Header().Get("Retry-After"), got.Body)
	}
	for _, cookies := range [][]*http.Cookie{{alice}, nil} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/v1/sessions/" + v.ID},
			{"DELETE", "/v1/sessions/" + v.ID},
		} {
			got := do(t, s, r.method, r.path, "", "", "", cookies...)
			if got.Code != http.StatusServiceUnavailable || got.Header().Get("Retry-After") == "" {
				t.Errorf("%s %s (cookies %d) = %d %q %s, want 503 with Retry-After", r.method, r.path, len(cookies), got.Code, got.Header().Get("Retry-After"), got.Body)
			}
		}
	}
}
