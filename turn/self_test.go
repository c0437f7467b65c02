package turn

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/turn/v3"

	"github.com/metal-stream/metal/internal/pionlog"
)

// newTURNClient connects a pion TURN client to s over UDP or TCP, with
// the credentials given (none for hand-made requests).
func newTURNClient(t *testing.T, s *Server, transport, user, pass string) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	if transport == "tcp" {
		tc, err := net.Dial("tcp4", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(tc)
	} else {
		uc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = uc
	}
	return newTURNClientOn(t, s, conn, user, pass)
}

// newTURNClientOn is a listening pion client of s on conn, closed (conn too)
// when the test ends.
func newTURNClientOn(t *testing.T, s *Server, conn net.PacketConn, user, pass string) *turn.Client {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: s.Addr().String(), STUNServerAddr: s.Addr().String(),
		Username: user, Password: pass, Realm: "metal", Conn: conn,
		LoggerFactory: pionlog.Factory{Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

// clientOver allocates a relay through s over UDP or TCP.
func clientOver(t *testing.T, s *Server, transport, user, pass string) (*turn.Client, net.PacketConn) {
	t.Helper()
	c := newTURNClient(t, s, transport, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	return c, relay
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error { m.Add(a.t, a.v); return nil }

// channelBind sends a ChannelBind for peer (channel 0x4001) and returns the
// error code of the answer (0 for success).
func channelBind(t *testing.T, c *turn.Client, server net.Addr, user, pass string, peer *net.UDPAddr) stun.ErrorCode {
	t.Helper()
	do := func(setters ...stun.Setter) *stun.Message {
		base := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
			rawAttr{stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}}}
		msg, err := stun.Build(append(base, setters...)...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.PerformTransaction(msg, server, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	peerAttr := stun.Setter(setterFunc(func(m *stun.Message) error {
		return (&stun.XORMappedAddress{IP: peer.IP, Port: peer.Port}).AddToAs(m, stun.AttrXORPeerAddress)
	}))
	first := do(peerAttr)
	var nonce stun.Nonce
	if err := nonce.GetFrom(first); err != nil {
		t.Fatalf("no nonce in %v", first)
	}
	res := do(peerAttr, stun.NewUsername(user), stun.NewRealm("metal"), nonce, stun.NewLongTermIntegrity(user, "metal", pass), stun.Fingerprint)
	if res.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res); err != nil {
		t.Fatalf("answer without an error code: %v", res)
	}
	return code.Code
}

type setterFunc func(m *stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// TestRelayRefusesItselfAndClusterPorts: over UDP and over TCP, a client
// may neither CreatePermission nor ChannelBind to the edge's own relay
// address (TURN inside TURN), even though the allow-list covers it; on an
// allowed streamer address, datagrams to the cluster's Consul and Nomad
// ports are not relayed while another port is.
func TestRelayRefusesItselfAndClusterPorts(t *testing.T) {
	s := startServer(t, allowStreamers)
	u, p := creds(t, time.Hour)
	self := &net.UDPAddr{IP: net.ParseIP(relayIP), Port: 49999}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			c, relay := clientOver(t, s, transport, u, p)
			if _, err := relay.WriteTo([]byte("turn in turn"), self); err == nil || !strings.Contains(err.Error(), "error 403") {
				t.Fatalf("CreatePermission to the relay's own address: %v, want 403", err)
			}
			if code := channelBind(t, c, s.Addr(), u, p, self); code != stun.CodeForbidden {
				t.Fatalf("ChannelBind to the relay's own address: code %d, want 403", code)
			}
			// An allowed streamer address is relayed (the permission for
			// it then exists; over TCP it is set up asynchronously, so the
			// first datagrams may be lost)...
			peer := echoPeer(t, streamIP)
			var err error
			for try := 0; try < 10; try++ {
				if _, err = relay.WriteTo([]byte("ok"), peer); err != nil {
					t.Fatal(err)
				}
				_ = relay.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, _, err = relay.ReadFrom(make([]byte, 100)); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("an allowed peer is not relayed: %v", err)
			}
			// ...but not to the cluster's Consul and Nomad ports on it.
			for _, port := range []int{8500, 8301, 4646} {
				l, err := net.ListenPacket("udp4", net.JoinHostPort(streamIP, strconv.Itoa(port)))
				if err != nil {
					t.Fatal(err)
				}
				for range 3 {
					if _, err := relay.WriteTo([]byte("hello consul"), l.LocalAddr()); err != nil {
						t.Fatal(err)
					}
				}
				_ = l.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, _, err := l.ReadFrom(make([]byte, 100)); err == nil {
					t.Errorf("port %d received %d bytes through the relay", port, n)
				}
				l.Close()
			}
		})
	}
	if got := metricValue(t, s, "metal_turn_peer_port_denied_total"); got < 6 {
		t.Errorf("port-denied counter = %v, want at least 6", got)
	}
}

// TestRelayRefusesEveryOwnAddress: over UDP and TCP, for CreatePermission
// and ChannelBind, the edge's -self-ip (its public IP behind NAT) is
// refused even with -allow-local-peers and an allow-list covering it, and
// without -allow-local-peers every address of this host is refused (here
// the streamer test address, a local interface address the allow-list
// covers).
func TestRelayRefusesEveryOwnAddress(t *testing.T) {
	public := netip.MustParseAddr("198.18.0.9")
	cases := []struct {
		name   string
		mutate func(*Config)
		target string
	}{
		{"self-ip", func(c *Config) { allowStreamers(c); c.SelfIPs = []netip.Addr{public} }, public.String()},
		{"local interface", func(c *Config) { allowStreamers(c); c.AllowLocalPeers = false }, streamIP},
	}
	for _, tc := range cases {
		s := startServer(t, tc.mutate)
		u, p := creds(t, time.Hour)
		own := &net.UDPAddr{IP: net.ParseIP(tc.target), Port: 49999}
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				c, relay := clientOver(t, s, transport, u, p)
				if _, err := relay.WriteTo([]byte("to myself"), own); err == nil || !strings.Contains(err.Error(), "error 403") {
					t.Fatalf("CreatePermission to %s: %v, want 403", own, err)
				}
				if code := channelBind(t, c, s.Addr(), u, p, own); code != stun.CodeForbidden {
					t.Fatalf("ChannelBind to %s: code %d, want 403", own, code)
				}
			})
		}
	}
}

// rawClient connects to s over UDP or TCP without allocating, for
// hand-made requests.
func rawClient(t *testing.T, s *Server, transport string) *turn.Client {
	t.Helper()
	return newTURNClient(t, s, transport, "", "")
}

// TestErrorAnswersCarryRealmAndNonce: over UDP and TCP, an Allocate with an
// expired or a forged credential gets 401 with REALM and NONCE (RFC 8489
// §9.2.4), and one with a nonce the server never gave gets 438 Stale Nonce
// with a fresh NONCE.
func TestErrorAnswersCarryRealmAndNonce(t *testing.T) {
	s := startServer(t, nil)
	expiredUser, expiredPass := creds(t, -time.Minute)
	goodUser, _ := creds(t, time.Hour)
	_, forgedPass, _ := turn.GenerateLongTermTURNRESTCredentials("some-other-secret-xyz", "sess-1", time.Hour)
	transportUDP := rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			c := rawClient(t, s, transport)
			ask := func(setters ...stun.Setter) *stun.Message {
				msg, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transportUDP}, setters...)...)
				if err != nil {
					t.Fatal(err)
				}
				res, err := c.PerformTransaction(msg, s.Addr(), false)
				if err != nil {
					t.Fatal(err)
				}
				return res.Msg
			}
			check := func(name string, res *stun.Message, want stun.ErrorCode) {
				t.Helper()
				var code stun.ErrorCodeAttribute
				var realm stun.Realm
				var nonce stun.Nonce
				if err := code.GetFrom(res); err != nil || code.Code != want {
					t.Errorf("%s: code %v, want %d", name, code.Code, want)
				}
				if err := nonce.GetFrom(res); err != nil || len(nonce) == 0 {
					t.Errorf("%s: no NONCE in the %d", name, want)
				}
				if err := realm.GetFrom(res); err != nil || realm.String() != "metal" {
					t.Errorf("%s: REALM %q, want metal", name, realm)
				}
			}
			first := ask()
			check("no credentials", first, stun.CodeUnauthorized)
			var nonce stun.Nonce
			_ = nonce.GetFrom(first)
			auth := func(user, pass string, n stun.Nonce) *stun.Message {
				return ask(stun.NewUsername(user), stun.NewRealm("metal"), n, stun.NewLongTermIntegrity(user, "metal", pass), stun.Fingerprint)
			}
			check("expired", auth(expiredUser, expiredPass, nonce), stun.CodeUnauthorized)
			check("forged", auth(goodUser, forgedPass, nonce), stun.CodeUnauthorized)
			check("stale nonce", auth(goodUser, forgedPass, stun.NewNonce("never-given")), stun.CodeStaleNonce)
		})
	}
}

// TestAllowListAndInternalRangesOverTransports: over UDP and TCP, for
// CreatePermission and ChannelBind, an allow-list naming a VPC range
// (10.1.0.0/16) admits its peers while every other internal range stays
// refused: the rest of 10.0.0.0/8, CGNAT, loopback, the cloud metadata
// address, multicast; a public address outside the list is refused too.
func TestAllowListAndInternalRangesOverTransports(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Allowed = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("198.18.0.0/24")}
	})
	u, p := creds(t, time.Hour)
	peers := []struct {
		ip      string
		allowed bool
	}{
		{"10.2.0.1", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"127.0.0.1", false},
		{"169.254.169.254", false},
		{"224.0.0.251", false},
		{"203.0.113.7", false}, // public, not listed
		// The VPC's streamers, last: the helper binds channel 0x4001, and
		// a channel bound once cannot take another peer.
		{"10.1.2.3", true},
	}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			c, relay := clientOver(t, s, transport, u, p)
			for _, peer := range peers {
				addr := &net.UDPAddr{IP: net.ParseIP(peer.ip), Port: 5004}
				code := channelBind(t, c, s.Addr(), u, p, addr)
				if (code == stun.CodeForbidden) == peer.allowed || (peer.allowed && code != 0) {
					t.Errorf("ChannelBind to %s: code %d, want allowed=%v", peer.ip, code, peer.allowed)
				}
				_, err := relay.WriteTo([]byte("hello"), addr)
				refused := err != nil && strings.Contains(err.Error(), "error 403")
				if refused == peer.allowed {
					t.Errorf("CreatePermission to %s: %v, want allowed=%v", peer.ip, err, peer.allowed)
				}
			}
		})
	}
}
