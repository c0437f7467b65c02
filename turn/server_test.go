package turn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v3"
)

const secret = "turn-test-secret-0123456789"

func needTestHosts(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp4", streamIP+":0")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("test host %s missing (needs a network namespace): %v", streamIP, err)
		}
		t.Skipf("test host %s missing (needs root for a network namespace): %v", streamIP, err)
	}
	c.Close()
}

func startServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	needTestHosts(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.HealthListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.RelayIP, cfg.Secret, cfg.Listeners = relayIP, secret, 2
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Ready when the health endpoint answers.
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + s.HealthAddr().String() + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 200 {
			t.Fatal("turn server not serving")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// client allocates a relay with the given credentials.
func client(t *testing.T, s *Server, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	c := newTURNClient(t, s, "udp", user, pass)
	relay, err := c.Allocate()
	if err != nil {
		return c, nil, err
	}
	t.Cleanup(func() { relay.Close() })
	return c, relay, nil
}

// allowStreamers lists the test's streamer network: the streamer runs on
// the relay's host here, and this host's addresses are refused unless
// AllowLocalPeers.
func allowStreamers(c *Config) {
	c.Allowed = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	c.AllowLocalPeers = true
}

func creds(t *testing.T, ttl time.Duration) (string, string) {
	t.Helper()
	u, p, err := Credentials(secret, "sess-1", ttl)
	if err != nil {
		t.Fatal(err)
	}
	return u, p
}

// echoPeer answers every datagram with the same bytes.
func echoPeer(t *testing.T, ip string) *net.UDPAddr {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

func TestRelayToAllowedPeer(t *testing.T) {
	s := startServer(t, allowStreamers)
	u, p := creds(t, time.Hour)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := relay.LocalAddr().(*net.UDPAddr); got.IP.String() != relayIP || got.Port < 49160 || got.Port > 49559 {
		t.Fatalf("relay address %v, want %s in 49160-49559", got, relayIP)
	}
	relayEcho(t, relay, []*net.UDPAddr{echoPeer(t, streamIP)}, 5)
}

// TestRelayRefusesInternalPeers: the relay must never become a way into the
// cluster or the cloud metadata service.
func TestRelayRefusesInternalPeers(t *testing.T) {
	s := startServer(t, nil) // no allow-list: only the deny list applies
	u, p := creds(t, time.Hour)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatal(err)
	}
	// A listener on loopback that must hear nothing.
	lo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	loPort := lo.LocalAddr().(*net.UDPAddr).Port
	for _, target := range []string{
		"127.0.0.1:" + strconv.Itoa(loPort), "10.0.0.1:53", "169.254.169.254:80", "[::1]:53", "[::ffff:127.0.0.1]:" + strconv.Itoa(loPort),
		"192.168.1.1:53", "100.64.0.1:53", "0.0.0.0:53",
	} {
		t.Run(target, func(t *testing.T) {
			addr, err := net.ResolveUDPAddr("udp", target)
			if err != nil {
				t.Fatal(err)
			}
			_, err = relay.WriteTo([]byte("let me in"), addr)
			if err == nil || !strings.Contains(err.Error(), "error 403") {
				t.Fatalf("relay to %s: err = %v, want a 403 refusal", target, err)
			}
		})
	}
	_ = lo.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := lo.ReadFrom(make([]byte, 100)); err == nil {
		t.Fatalf("loopback listener received %d bytes through the relay", n)
	}
	if got := metricValue(t, s, "metal_turn_permissions_denied_total"); got < 8 {
		t.Errorf("denied counter = %v, want at least 8", got)
	}
}

func TestBadCredentialsGet401(t *testing.T) {
	s := startServer(t, nil)
	expiredUser, expiredPass := creds(t, -time.Minute)
	goodUser, _ := creds(t, time.Hour)
	_, forgedPass, _ := turn.GenerateLongTermTURNRESTCredentials("some-other-secret-xyz", "sess-1", time.Hour)
	tests := []struct{ name, user, pass string }{
		{"expired", expiredUser, expiredPass},
		{"forged", goodUser, forgedPass},
		{"malformed user", "not-a-timestamp", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := client(t, s, tt.user, tt.pass)
			if err == nil || !strings.Contains(err.Error(), "error 401") {
				t.Fatalf("Allocate = %v, want 401", err)
			}
		})
	}
	if got := metricValue(t, s, "metal_turn_auth_failures_total"); got < 3 {
		t.Errorf("auth failure counter = %v", got)
	}
}

// TestMalformedPacketsDoNotHurt throws garbage at the UDP and TCP listeners,
// then checks that a real client still allocates and relays.
func TestMalformedPacketsDoNotHurt(t *testing.T) {
	s := startServer(t, allowStreamers) // the streamer is on this host: listed
	udp, err := net.Dial("udp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	junk := [][]byte{
		{}, {0}, {0, 1, 0, 0}, []byte("GET / HTTP/1.1\r\n\r\n"),
		{0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42},                                    // allocate header, truncated
		append([]byte{0x00, 0x03, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...), // length lies
		{0x40, 0x00, 0xff, 0xff, 1, 2, 3},                                                   // channel data, bad length
	}
	for i := 0; i < 200; i++ {
		b := make([]byte, i*7%1400)
		for j := range b {
			b[j] = byte(i*31 + j*17)
		}
		junk = append(junk, b)
	}
	for _, b := range junk {
		_, _ = udp.Write(b)
	}
	udp.Close()
	tcp, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tcp.Write([]byte{0x00, 0x03, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3})
	tcp.Close()

	u, p := creds(t, time.Hour)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatalf("allocate after garbage: %v", err)
	}
	peer := echoPeer(t, streamIP)
	if _, err := relay.WriteTo([]byte("still here"), peer); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := relay.ReadFrom(make([]byte, 100)); err != nil {
		t.Fatalf("relay broken after garbage: %v", err)
	}
}

func TestAllocationCaps(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxAllocations, c.AllocationKbps = 1, 800; allowStreamers(c) })
	u, p := creds(t, time.Hour)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client(t, s, u, p); err == nil {
		t.Fatal("second allocation accepted over a cap of 1")
	}
	// 800 kbit/s is 100 kB/s with a 64 KiB burst: 400 kB sent at once must
	// not all arrive.
	sink, err := net.ListenPacket("udp4", streamIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	got := make(chan int)
	go func() {
		total, buf := 0, make([]byte, 1500)
		for {
			_ = sink.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, _, err := sink.ReadFrom(buf)
			if err != nil {
				got <- total
				return
			}
			total += n
		}
	}()
	payload := make([]byte, 1000)
	for range 400 {
		if _, err := relay.WriteTo(payload, sink.LocalAddr()); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
	}
	if total := <-got; total == 0 || total > 200_000 {
		t.Fatalf("peer received %d bytes of 400000 under a 100 kB/s cap", total)
	}
	if metricValue(t, s, "metal_turn_dropped_bytes_total") == 0 {
		t.Error("no dropped bytes counted")
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.RelayIP, good.Secret = "203.0.113.1", secret
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.RelayIP = "" }, "-relay-ip"},
		{func(c *Config) { c.Secret = "short" }, "-secret"},
		{func(c *Config) { c.MinPort, c.MaxPort = 5, 4 }, "-min-port"},
		{func(c *Config) { c.Listen = "x" }, "-listen"},
		// The relay port range must hold the allocation cap (README: the
		// arithmetic).
		{func(c *Config) { c.MinPort, c.MaxPort, c.MaxAllocations = 50000, 50009, 100 }, "-max-allocations"},
		// An allow-list admits public networks and RFC 1918 / ULA VPC
		// ranges, nothing that spans other internal ranges.
		{func(c *Config) { c.Allowed = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }, "-allow 0.0.0.0/0"},
		{func(c *Config) { c.Allowed = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")} }, "-allow 100.64.0.0/10"},
		{func(c *Config) { c.Allowed = []netip.Prefix{netip.MustParsePrefix("8.0.0.0/4")} }, "-allow 0.0.0.0/4"},
		{func(c *Config) { c.Allowed = []netip.Prefix{netip.MustParsePrefix("::/0")} }, "-allow ::/0"},
	} {
		c := good
		tt.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate = %v, want mention of %s", err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Error("the secret leaked into an error")
		}
	}
	vpc := good
	vpc.Allowed = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("fd12:3456::/48")}
	if err := vpc.Validate(); err != nil {
		t.Errorf("a VPC allow-list: %v", err)
	}
}

func metricValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return v
		}
	}
	return 0
}

// TestRelayOutlivesItsCredential: a credential opens a relay while valid;
// after it expires, the same client keeps refreshing that relay and
// permitting new peers (pion checks the credential on each), with a relay
// lifetime of 5 s so refreshes happen in the test; the expired credential
// opens nothing from another client address.
func TestRelayOutlivesItsCredential(t *testing.T) {
	s := startServer(t, func(c *Config) {
		allowStreamers(c)
		c.AllocationLifetime = 5 * time.Second
	})
	u, p := creds(t, 2*time.Second)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(peer *net.UDPAddr, msg string) error {
		if _, err := relay.WriteTo([]byte(msg), peer); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		_ = relay.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := relay.ReadFrom(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != msg {
			return fmt.Errorf("echo %q, want %q", buf[:n], msg)
		}
		return nil
	}
	if err := echo(echoPeer(t, streamIP), "before"); err != nil {
		t.Fatal(err)
	}
	// 9 s: the credential expired 7 s ago; the relay (5 s lifetime) lives
	// only if its refreshes were accepted.
	time.Sleep(9 * time.Second)
	if err := echo(echoPeer(t, streamIP), "after, to a new peer"); err != nil {
		t.Fatalf("relay of an expired credential, same client: %v", err)
	}
	if _, _, err := client(t, s, u, p); err == nil || !strings.Contains(err.Error(), "error 401") {
		t.Fatalf("the expired credential from another address: %v, want 401", err)
	}
}
