package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/syncbuf"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/turn"
)

const (
	relayIP    = "198.18.0.1"
	streamIP   = "198.18.0.2"
	turnSecret = "e2e-turn-secret-0123456789"
)

// startTURN runs Metal's relay in-process, relaying only to the test's
// streamer network.
func startTURN(t testing.TB) *turn.Server { return startTURNWith(t, nil) }

// startTURNWith is startTURN with the configuration changed by mutate.
func startTURNWith(t testing.TB, mutate func(*turn.Config)) *turn.Server {
	t.Helper()
	cfg := turn.DefaultConfig()
	cfg.Listen, cfg.HealthListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.RelayIP, cfg.Secret, cfg.Listeners = relayIP, turnSecret, 2
	cfg.Allowed = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	cfg.AllowLocalPeers = true // the streamer runs on this host
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := turn.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatalf("turn listen (needs the test hosts of the e2e namespace): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// startStreamerProc runs `metal streamer` with a known token key.
func startStreamerProc(t testing.TB, key string) string {
	t.Helper()
	port, icePort := freePort(t), freePort(t)
	cmd := exec.Command(metalBinary(t), "streamer", "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-ice-port", fmt.Sprint(icePort), "-loopback", "-ice-interfaces", "lo", "-audio=false",
		"-session", "relay-test", "-token-key", key)
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("streamer not ready: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChromiumStreamsThroughTURN forces Chromium to relay only
// (iceTransportPolicy "relay") through Metal's TURN server and checks that
// frames decode over a relay candidate pair.
func TestChromiumStreamsThroughTURN(t *testing.T) {
	s := startTURN(t)
	playRelayOnly(t, s, time.Hour)
	resp, err := http.Get("http://" + s.HealthAddr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Allocations int }
	_ = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h.Allocations < 1 {
		t.Fatalf("turn reports %d allocations", h.Allocations)
	}
}

// playRelayOnly opens a streamer's page in Chromium with relay-only ICE
// through s, with TURN credentials valid for ttl, and waits until frames
// decode over a relay candidate pair.
func playRelayOnly(t *testing.T, s *turn.Server, ttl time.Duration) context.Context {
	t.Helper()
	return playRelayOnlyVia(t, browsertest.New(t), fmt.Sprintf("turn:%s?transport=udp", s.Addr()), ttl)
}

// playRelayOnlyVia is playRelayOnly through the TURN URL turnURL, in
// browser.
func playRelayOnlyVia(t *testing.T, browser context.Context, turnURL string, ttl time.Duration) context.Context {
	t.Helper()
	key := "e2e-streamer-key-0123456789abcdef-xyz"
	base := startStreamerProc(t, key)
	signer, _ := token.NewSigner([]byte(key))
	tok, _ := signer.Sign("relay-test", token.RoleOwner, time.Hour, time.Now())
	user, pass, err := turn.Credentials(turnSecret, "relay-test", ttl)
	if err != nil {
		t.Fatal(err)
	}
	ice, _ := json.Marshal([]map[string]any{{
		"urls":     []string{turnURL},
		"username": user, "credential": pass,
	}})
	page := base + "/#relay=1&token=" + tok + "&ice=" + url.QueryEscape(string(ice))

	tab := browsertest.Tab(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.stats && metal.stats.framesDecoded > 30`, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if typ := selectedCandidate(t, tab); typ != "relay" {
		t.Fatalf("selected local candidate type %q, want relay", typ)
	}
	return tab
}

// selectedCandidate is the type of the nominated pair's local candidate.
func selectedCandidate(t *testing.T, tab context.Context) string {
	t.Helper()
	relay := `metal.state.pc.getStats().then(r => { let t = ""; r.forEach(s => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") { const l = r.get(s.localCandidateId); t = l && l.candidateType; } }); return t; })`
	typ, err := browsertest.Eval[string](tab, relay)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

// TestChromiumRelayOutlivesCredentials: a relay-only Chromium session whose
// TURN credentials live 6 s keeps decoding for more than 3× that, while
// Chromium refreshes its relay every 5 s (the relay lifetime is 10 s here,
// so the refreshes, which carry the expired credential, happen in the
// test, and the relay counts them).
func TestChromiumRelayOutlivesCredentials(t *testing.T) {
	const ttl = 6 * time.Second
	s := startTURNWith(t, func(c *turn.Config) { c.AllocationLifetime = 10 * time.Second })
	issued := time.Now()
	tab := playRelayOnly(t, s, ttl)
	time.Sleep(time.Until(issued.Add(3*ttl + 2*time.Second)))
	before := framesOf(t, tab)
	time.Sleep(2 * time.Second)
	if after := framesOf(t, tab); after < before+30 {
		t.Fatalf("%v after the credential was issued (TTL %v), %d frames in 2 s: the relay died", time.Since(issued).Round(time.Second), ttl, after-before)
	}
	if typ := selectedCandidate(t, tab); typ != "relay" {
		t.Fatalf("selected local candidate type %q, want relay", typ)
	}
	resp, err := http.Get("http://" + s.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^metal_turn_expired_credential_accepted_total [1-9]`).Match(body) {
		t.Fatalf("no refresh with the expired credential reached the relay (TTL %v): the test did not test it", ttl)
	}

	// A reconnect long after the TTL (a network change) opens a new
	// relay from a new client address, which no held credential covers:
	// the page asks for fresh credentials first (cfg.refresh, which the
	// gateway's pages set to fetch the session again) and plays on.
	user, pass, err := turn.Credentials(turnSecret, "relay-test", ttl)
	if err != nil {
		t.Fatal(err)
	}
	js := fmt.Sprintf(`metal.refreshed = 0; metal.oldpc = metal.state.pc;
		metal.cfg.refresh = async () => { metal.refreshed++; metal.cfg.iceServers = [{urls: metal.cfg.iceServers[0].urls, username: %q, credential: %q}]; };
		metal.reconnect(), 0`, user, pass)
	if _, err := browsertest.Eval[any](tab, js); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.pc && metal.state.pc !== metal.oldpc && metal.state.pc.connectionState === "connected"`, 30*time.Second); err != nil {
		st, _ := browsertest.Eval[string](tab, `document.getElementById("status").textContent`)
		t.Fatalf("no relayed connection after a reconnect past the TTL (%v); page says %q", err, st)
	}
	waitFrames(t, tab, framesOf(t, tab)+30)
	if typ := selectedCandidate(t, tab); typ != "relay" {
		t.Fatalf("after the reconnect: selected local candidate type %q, want relay", typ)
	}
	if n, _ := browsertest.Eval[int](tab, `metal.refreshed`); n < 1 {
		t.Fatal("the page reconnected without asking for fresh TURN credentials")
	}
}

// TestChromiumPlaysOverTURNS: with only a turns: URL (TURN over TLS, for
// networks that block UDP), a relay-only Chromium session decodes. The
// relay's certificate is self-signed for 127.0.0.1 and Chromium is told to
// accept it (tests only).
func TestChromiumPlaysOverTURNS(t *testing.T) {
	cert, key := selfSigned(t)
	s := startTURNWith(t, func(c *turn.Config) { c.TLSListen, c.TLSCert, c.TLSKey = "127.0.0.1:0", cert, key })
	_, port, _ := net.SplitHostPort(s.TLSAddr().String())
	tab := playRelayOnlyVia(t, browsertest.NewTrustingSelfSigned(t), "turns:127.0.0.1:"+port+"?transport=tcp", time.Hour)
	waitFrames(t, tab, framesOf(t, tab)+30)
	proto := `metal.state.pc.getStats().then(r => { let p = ""; r.forEach(s => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") { const l = r.get(s.localCandidateId); p = l && l.relayProtocol; } }); return p; })`
	if got, err := browsertest.Eval[string](tab, proto); err != nil || got != "tls" {
		t.Fatalf("relay protocol %q (%v), want tls", got, err)
	}
}
