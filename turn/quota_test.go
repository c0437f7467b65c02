package turn

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// TestQuotasPerUserAndAddress: one credential (a session) holds at most
// PerUserAllocations relays and one client IP at most PerIPAllocations;
// beyond either, Allocate gets 486, and closing a relay frees its place.
func TestQuotasPerUserAndAddress(t *testing.T) {
	s := startServer(t, func(c *Config) { c.PerUserAllocations, c.PerIPAllocations = 2, 3 })
	u1, p1 := creds(t, time.Hour)
	var relays []net.PacketConn
	for range 2 {
		_, r, err := client(t, s, u1, p1)
		if err != nil {
			t.Fatal(err)
		}
		relays = append(relays, r)
	}
	if _, _, err := client(t, s, u1, p1); err == nil || !strings.Contains(err.Error(), "error 486") {
		t.Fatalf("third relay of one credential: %v, want 486", err)
	}
	u2, p2, _ := Credentials(secret, "sess-2", time.Hour)
	if _, _, err := client(t, s, u2, p2); err != nil {
		t.Fatalf("another session's first relay from the same address: %v", err)
	}
	u3, p3, _ := Credentials(secret, "sess-3", time.Hour)
	if _, _, err := client(t, s, u3, p3); err == nil || !strings.Contains(err.Error(), "error 486") {
		t.Fatalf("fourth relay from one address: %v, want 486", err)
	}
	relays[0].Close() // a Refresh with lifetime 0: the relay goes
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, err := client(t, s, u1, p1)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed relay's place was not freed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := metricValue(t, s, "metal_turn_quota_refused_total"); got < 2 {
		t.Errorf("quota counter = %v, want at least 2", got)
	}
}

// TestLimiterCountsOnlyPermittedPeers: a stranger spraying the relay port
// from an address the client never permitted does not drain the relay's
// bandwidth budget: the permitted peer's datagrams still arrive.
func TestLimiterCountsOnlyPermittedPeers(t *testing.T) {
	s := startServer(t, func(c *Config) { c.AllocationKbps = 800; allowStreamers(c) }) // 100 kB/s, 64 KiB burst
	u, p := creds(t, time.Hour)
	_, relay, err := client(t, s, u, p)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenPacket("udp4", streamIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// The client permits the peer (and learns it answers).
	if _, err := relay.WriteTo([]byte("hi"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := peer.ReadFrom(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	// A stranger on another address sprays 400 kB at the relay port.
	stranger, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	junk := make([]byte, 1000)
	for range 400 {
		_, _ = stranger.WriteTo(junk, relay.LocalAddr())
	}
	time.Sleep(100 * time.Millisecond)
	// The peer sends 40 kB, within the burst: all of it must arrive.
	go func() {
		for range 40 {
			_, _ = peer.WriteTo(junk, relay.LocalAddr())
			time.Sleep(time.Millisecond)
		}
	}()
	got := 0
	for got < 40 {
		_ = relay.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := relay.ReadFrom(make([]byte, 1500)); err != nil {
			break
		}
		got++
	}
	if got < 40 {
		t.Fatalf("%d of 40 datagrams from the permitted peer arrived after a stranger's spray", got)
	}
	// And the limiter is on for the permitted peer: 400 kB at once do not
	// all pass a 100 kB/s cap with a 64 KiB burst.
	for range 400 {
		_, _ = peer.WriteTo(junk, relay.LocalAddr())
	}
	passed := 0
	for {
		_ = relay.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, _, err := relay.ReadFrom(make([]byte, 1500)); err != nil {
			break
		}
		passed++
	}
	if passed == 0 || passed > 200 {
		t.Fatalf("%d of 400 datagrams from the permitted peer passed a 100 kB/s cap", passed)
	}
}

// TestTCPConnectionCapAndIdle: beyond MaxTCPConns a connection is closed at
// once, and one that says nothing for TCPIdle is closed.
func TestTCPConnectionCapAndIdle(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxTCPConns, c.TCPIdle = 2, time.Second })
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp4", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	extra, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a connection beyond the cap stayed open: %v", err)
	}
	start := time.Now()
	_ = conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("an idle connection stayed open for 5 s: %v", err)
	}
	t.Logf("idle connection closed after %v", time.Since(start).Round(100*time.Millisecond))
	if got := metricValue(t, s, "metal_turn_tcp_refused_total"); got < 1 {
		t.Errorf("tcp refused counter = %v", got)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// readSTUN reads one STUN message from a TCP stream.
func readSTUN(t *testing.T, c net.Conn) *stun.Message {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	head := make([]byte, 20)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(head[2])<<8|int(head[3]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	msg := &stun.Message{Raw: append(head, body...)}
	if err := msg.Decode(); err != nil {
		t.Fatal(err)
	}
	return msg
}

// writeSplit sends b in two TCP segments, apart in time.
func writeSplit(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Write(b[len(b)/2:]); err != nil {
		t.Fatal(err)
	}
}

// TestTCPQuotaHoldsAcrossSegments: over TCP, an Allocate split across
// segments is seen whole and refused at the session's quota (486).
func TestTCPQuotaHoldsAcrossSegments(t *testing.T) {
	s := startServer(t, func(c *Config) { c.PerUserAllocations = 1 })
	u, p := creds(t, time.Hour)
	if _, _, err := client(t, s, u, p); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	transportUDP := rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}}
	first, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transportUDP, stun.Fingerprint)
	writeSplit(t, conn, first.Raw)
	challenge := readSTUN(t, conn)
	var nonce stun.Nonce
	if err := nonce.GetFrom(challenge); err != nil {
		t.Fatalf("no nonce in %v", challenge)
	}
	req, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transportUDP,
		stun.NewUsername(u), stun.NewRealm("metal"), nonce, stun.NewLongTermIntegrity(u, "metal", p), stun.Fingerprint)
	writeSplit(t, conn, req.Raw)
	res := readSTUN(t, conn)
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeAllocQuotaReached {
		t.Fatalf("second relay of one session over TCP, split: %v (code %v), want 486", res, code.Code)
	}
}

// TestSpectatorsShareOneQuota: the gateway names every spectator of a
// session "<session>-w<random>", a new name on each poll of the share link;
// together they hold at most SpectatorAllocations relays, apart from the
// owner's quota, which they cannot touch.
func TestSpectatorsShareOneQuota(t *testing.T) {
	s := startServer(t, func(c *Config) { c.PerUserAllocations, c.SpectatorAllocations, c.PerIPAllocations = 1, 2, 0 })
	for i, name := range []string{"sess-9-w0a1b2c3d", "sess-9-wdeadbeef"} {
		u, p, _ := Credentials(secret, name, time.Hour)
		if _, _, err := client(t, s, u, p); err != nil {
			t.Fatalf("spectator %d's relay: %v", i+1, err)
		}
	}
	u, p, _ := Credentials(secret, "sess-9-w0badf00d", time.Hour)
	if _, _, err := client(t, s, u, p); err == nil || !strings.Contains(err.Error(), "error 486") {
		t.Fatalf("a third spectator's relay (a fresh name): %v, want 486", err)
	}
	u, p, _ = Credentials(secret, "sess-9", time.Hour)
	if _, _, err := client(t, s, u, p); err != nil {
		t.Fatalf("the owner's relay while spectators hold theirs: %v", err)
	}
}

func TestSessionOfNamesTheAccount(t *testing.T) {
	for _, tt := range []struct {
		user, account string
		spectators    bool
	}{
		{"1700000000:abc123", "abc123", false},
		{"1700000000:abc123-w0a1b2c3d", "abc123-w", true},
		{"abc123-w", "abc123-w", false}, // no hex after -w: a name like any
		{"1700000000:abc-wxyz", "abc-wxyz", false},
	} {
		if a, sp := sessionOf(tt.user); a != tt.account || sp != tt.spectators {
			t.Errorf("sessionOf(%q) = %q, %v; want %q, %v", tt.user, a, sp, tt.account, tt.spectators)
		}
	}
}
