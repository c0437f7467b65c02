package streamer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/token"
)

var testKey = []byte("test-key-0123456789abcdef-0123456789")

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

type running struct {
	*Server
	cancel context.CancelFunc
	done   chan error
}

// startStreamer runs a real streamer (Xvfb, GStreamer, PulseAudio) on
// loopback and stops it when the test ends.
func startStreamer(t testing.TB, mutate func(*Config), hooks ...func(*Server)) *running {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.ICEPort = freeUDPPort(t)
	cfg.Loopback = true
	cfg.ICEInterfaces = []string{"lo"}
	cfg.TokenKey = testKey
	cfg.SessionID = "sess-test"
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("METAL_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		h(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("streamer Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("streamer did not stop within 30s of cancel")
		}
	})
	// Ready when the first frame is encoded.
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, code := health(t, s.URL())
		if code == http.StatusOK && h.Status == "ok" {
			break
		}
		select {
		case err := <-r.done:
			t.Fatalf("streamer exited before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("streamer not ready: %+v", h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func health(t testing.TB, base string) (Health, int) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		return Health{}, 0
	}
	defer resp.Body.Close()
	var h Health
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h, resp.StatusCode
}

func (r *running) token(t testing.TB, session string, role token.Role) string {
	t.Helper()
	s, _ := token.NewSigner(testKey)
	tok, err := s.Sign(session, role, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.TokenKey = testKey
	if err := good.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tt := range []struct {
		mutate func(*Config)
		flag   string
	}{
		{func(c *Config) { c.Listen = "x" }, "-listen"},
		{func(c *Config) { c.FPS = 0 }, "-fps"},
		{func(c *Config) { c.Width = 1281 }, "-resolution"},
		{func(c *Config) { c.Encoder = "h265" }, "-encoder"},
		{func(c *Config) { c.TokenKey = []byte("short") }, "-token-key"},
		{func(c *Config) { c.PublicIPs = []string{"not-an-ip"} }, "-public-ip"},
		{func(c *Config) { c.MinKbps = 0 }, "-min-kbps"},
	} {
		c := good
		tt.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("Validate = %v, want an error naming %s", err, tt.flag)
		}
	}
}

// TestSoftwareEncoderWhenNoNVENC checks the encoder the streamer reports in
// /healthz and /metrics on a machine without NVENC (every CI machine).
func TestSoftwareEncoderWhenNoNVENC(t *testing.T) {
	if (gstProbe{}).Probe(EncoderNVH264) == nil {
		t.Skip("this machine has a working NVENC")
	}
	r := startStreamer(t, func(c *Config) { c.Audio, c.Demo = false, false })
	h, _ := health(t, r.URL())
	if h.Encoder != EncoderX264 || h.Codec != "video/H264" {
		t.Fatalf("healthz encoder = %q codec %q, want x264enc video/H264", h.Encoder, h.Codec)
	}
	resp, err := http.Get(r.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`metal_streamer_encoder_info{encoder="x264enc"} 1`, "metal_streamer_encode_latency_seconds_count", "metal_streamer_frames_total"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestWHEPRejectsBadRequests sends malformed and unauthorised WHEP requests
// and checks each gets a clear 4xx, then that the streamer still serves.
func TestWHEPRejectsBadRequests(t *testing.T) {
	r := startStreamer(t, func(c *Config) { c.Audio, c.Demo = false, false })
	owner := r.token(t, "sess-test", token.RoleOwner)
	other := r.token(t, "another-session", token.RoleOwner)
	forgedSigner, _ := token.NewSigner([]byte("some-other-key-0123456789abcdef-xyz"))
	forged, _ := forgedSigner.Sign("sess-test", token.RoleOwner, time.Hour, time.Now())
	tests := []struct {
		name, method, path, ctype, auth, body string
		want                                  int
		wantText                              string
	}{
		{"no token", "POST", "/whep", "application/sdp", "", "v=0", 401, "missing session token"},
		{"forged token", "POST", "/whep", "application/sdp", forged, "v=0", 401, "bad token signature"},
		{"garbage token", "POST", "/whep", "application/sdp", "abc.def", "v=0", 401, "invalid session token"},
		{"other session", "POST", "/whep", "application/sdp", other, "v=0", 403, "another session"},
		{"wrong content type", "POST", "/whep", "application/json", owner, "{}", 415, "application/sdp"},
		{"empty offer", "POST", "/whep", "application/sdp", owner, "", 400, "empty body"},
		{"garbage offer", "POST", "/whep", "application/sdp", owner, "hello world", 400, "invalid SDP offer"},
		{"no video", "POST", "/whep", "application/sdp", owner, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "no video m-line"},
		{"oversized", "POST", "/whep", "application/sdp", owner, strings.Repeat("a", maxOfferBytes+10), 413, "larger than"},
		{"patch unknown", "PATCH", "/whep/x", "application/trickle-ice-sdpfrag", owner, "a=x", 404, "no such WHEP session"},
		{"patch without token", "PATCH", "/whep/x", "application/trickle-ice-sdpfrag", "", "a=x", 401, "missing session token"},
		{"delete unknown", "DELETE", "/whep/nope", "", owner, "", 404, "no such WHEP session"},
		{"delete without token", "DELETE", "/whep/nope", "", "", "", 401, "missing session token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, r.URL()+tt.path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.wantText) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, resp.StatusCode, b, tt.want, tt.wantText)
			}
		})
	}
	if h, code := health(t, r.URL()); code != 200 || h.Peers != 0 {
		t.Fatalf("after bad requests: healthz %d %+v, want ok with no peers left behind", code, h)
	}
}

// TestIdleTimeoutExitsCleanly checks that a streamer nobody watches ends
// by itself with a nil error (exit code 0 for Nomad) and stops its Xvfb.
func TestIdleTimeoutExitsCleanly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.ICEPort, cfg.Loopback = "127.0.0.1:0", freeUDPPort(t), true
	cfg.TokenKey, cfg.Audio, cfg.Demo = testKey, false, false
	cfg.IdleTimeout = 2 * time.Second
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after idle timeout = %v, want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("streamer did not exit after its idle timeout")
	}
	display := s.Display()
	if display == "" {
		t.Fatal("no display recorded")
	}
	if _, err := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%s", strings.TrimPrefix(display, ":"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Xvfb socket for %s still present after exit: %v", display, err)
	}
}
