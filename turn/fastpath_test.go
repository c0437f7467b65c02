package turn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// relayEcho sends n datagrams through relay to each of the peers (tagged
// with the peer's index) and checks each comes back from its own peer with
// its own bytes.
func relayEcho(t *testing.T, relay net.PacketConn, peers []*net.UDPAddr, n int) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range n {
		for j, peer := range peers {
			msg := []byte(fmt.Sprintf("peer %d datagram %d", j, i))
			if _, err := relay.WriteTo(msg, peer); err != nil {
				t.Fatal(err)
			}
			_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
			got, from, err := relay.ReadFrom(buf)
			if err != nil {
				t.Fatalf("datagram %d to peer %d: no echo through the relay: %v", i, j, err)
			}
			if string(buf[:got]) != string(msg) || from.String() != peer.String() {
				t.Fatalf("got %q from %v, want %q from %v", buf[:got], from, msg, peer)
			}
		}
	}
}

// TestChannelDataTakesTheFastPath: once pion has bound a client's channels
// (two peers, so two channels), Metal relays the client's ChannelData to the
// right peer itself. When the binding is past its lifetime, pion relays
// again (and would refuse what it no longer knows); a ChannelBind pion
// refuses (a peer the filter refuses) is never learned.
func TestChannelDataTakesTheFastPath(t *testing.T) {
	s := startServer(t, allowStreamers)
	u, p := creds(t, time.Hour)
	c, relay := clientOver(t, s, "udp", u, p)
	peers := []*net.UDPAddr{echoPeer(t, streamIP), echoPeer(t, streamIP)}
	relayEcho(t, relay, peers, 100)
	// pion's client sends its first datagrams to a peer as Send
	// indications, until its ChannelBind is answered.
	if hits := s.fast.hits.Load(); hits < 150 {
		t.Fatalf("%d of 200 datagrams took the fast path to the peers, want nearly all", hits)
	}
	if hits := s.gen.backHits.Load(); hits < 150 {
		t.Fatalf("%d of 200 echoes took the fast path back, want nearly all", hits)
	}
	s.fast.mu.Lock()
	if len(s.fast.bound) != 2 {
		t.Errorf("%d bindings learned, want 2 (one per peer)", len(s.fast.bound))
	}
	for k, bd := range s.fast.bound {
		bd.until = time.Now().Add(-time.Second) // as if pion's binding had expired
		s.fast.bound[k] = bd
		backs := map[netip.AddrPort]back{}
		for pk, b := range *bd.relay.backs.Load() {
			b.until = bd.until
			backs[pk] = b
		}
		bd.relay.backs.Store(&backs)
	}
	s.fast.mu.Unlock()
	before, beforeBack := s.fast.hits.Load(), s.gen.backHits.Load()
	relayEcho(t, relay, peers, 10)
	if hits := s.fast.hits.Load(); hits != before {
		t.Errorf("%d datagrams took an expired binding to the peer", hits-before)
	}
	if hits := s.gen.backHits.Load(); hits != beforeBack {
		t.Errorf("%d datagrams took an expired binding back", hits-beforeBack)
	}

	// A refused ChannelBind, over the same server: not learned.
	s.fast.mu.Lock()
	clear(s.fast.bound)
	s.fast.mu.Unlock()
	self := &net.UDPAddr{IP: net.ParseIP(relayIP), Port: 3478}
	if code := channelBind(t, c, s.Addr(), u, p, self); code == 0 {
		t.Fatal("ChannelBind to the relay's own address succeeded")
	}
	s.fast.mu.Lock()
	n := len(s.fast.bound)
	s.fast.mu.Unlock()
	if n != 0 {
		t.Errorf("a refused ChannelBind was learned (%d bindings)", n)
	}
}

// TestFastPathLeavesToPion: what the fast path does not know, or must not
// relay, it leaves to pion: a ChannelData shorter than its length field, an
// unknown channel or client, a binding whose relay is closed or expired.
func TestFastPathLeavesToPion(t *testing.T) {
	q := newQuotas(0, 0, 0, nil)
	ch := newChannels(q, time.Minute, nil)
	client := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	g := &cappedGenerator{m: newMetrics(), ports: &portSet{}}
	g.toPeer = g.m.relayed.WithLabelValues("to_peer")
	relay := &cappedConn{PacketConn: pc, g: g}
	key := chanKey{netip.MustParseAddrPort("127.0.0.1:5000"), 0x4001}
	ch.bound[key] = binding{relay: relay, peer: sink.LocalAddr().(*net.UDPAddr), until: time.Now().Add(time.Minute)}
	data := []byte{0x40, 0x01, 0, 4, 'p', 'i', 'n', 'g'}

	if !ch.relay(data, client) {
		t.Fatal("a bound channel was not relayed")
	}
	buf := make([]byte, 64)
	_ = sink.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := sink.ReadFrom(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("peer got %q, %v; want ping", buf[:n], err)
	}
	for name, c := range map[string]struct {
		b    []byte
		from net.Addr
	}{
		"short":         {[]byte{0x40, 0x01, 0, 8, 'p', 'i', 'n', 'g'}, client},
		"other channel": {[]byte{0x40, 0x02, 0, 4, 'p', 'i', 'n', 'g'}, client},
		"other client":  {data, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5001}},
		"not channel":   {[]byte{0x00, 0x01, 0, 0}, client},
		"tcp client":    {data, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}},
		"header only":   {[]byte{0x40, 0x01}, client},
	} {
		if ch.relay(c.b, c.from) {
			t.Errorf("%s: relayed by the fast path", name)
		}
	}
	bd := ch.bound[key]
	bd.until = time.Now()
	ch.bound[key] = bd
	if ch.relay(data, client) {
		t.Error("expired binding: relayed by the fast path")
	}
	bd.until = time.Now().Add(time.Minute)
	ch.bound[key] = bd
	relay.Close()
	if ch.relay(data, client) {
		t.Error("closed relay: relayed by the fast path")
	}
}

// TestFastPathNeverLearnsARefusedPeer: a ChannelBind pion never answers
// (sent before any allocation, to the relay's own address) must not be
// matched to a later success answer that reuses its transaction ID for an
// allowed peer: the fast path learns the request pion answered, and checks
// the peer against the filter again. The refused address receives nothing.
func TestFastPathNeverLearnsARefusedPeer(t *testing.T) {
	s := startServer(t, func(c *Config) { allowStreamers(c); c.AllocationKbps = 0 })
	u, p := creds(t, time.Hour)
	uc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := newTURNClientOn(t, s, uc, u, p)
	refused, err := net.ListenPacket("udp4", relayIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	bad := refused.LocalAddr().(*net.UDPAddr)
	good := echoPeer(t, streamIP)
	bind := func(id [stun.TransactionIDSize]byte, peer *net.UDPAddr, extra ...stun.Setter) *stun.Message {
		m, err := stun.Build(append([]stun.Setter{stun.NewTransactionIDSetter(id), stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
			rawAttr{stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}},
			setterFunc(func(m *stun.Message) error {
				return (&stun.XORMappedAddress{IP: peer.IP, Port: peer.Port}).AddToAs(m, stun.AttrXORPeerAddress)
			})}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var reused, probe [stun.TransactionIDSize]byte
	copy(reused[:], "reused-id-01")
	copy(probe[:], "nonce-probe1")
	if _, err := uc.WriteTo(bind(reused, bad).Raw, s.Addr()); err != nil { // no allocation yet: no answer
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	res, err := c.PerformTransaction(bind(probe, good), s.Addr(), false)
	if err != nil {
		t.Fatal(err)
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(res.Msg); err != nil {
		t.Fatalf("no nonce in %v", res.Msg)
	}
	res, err = c.PerformTransaction(bind(reused, good, stun.NewUsername(u), stun.NewRealm("metal"), nonce,
		stun.NewLongTermIntegrity(u, "metal", p), stun.Fingerprint), s.Addr(), false)
	if err != nil || res.Msg.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind to an allowed peer: %v %v", res.Msg, err)
	}
	ck, _ := udpKey(uc.LocalAddr())
	s.fast.mu.Lock()
	bd, ok := s.fast.bound[chanKey{ck, 0x4001}]
	s.fast.mu.Unlock()
	if !ok || bd.peer.String() != good.String() {
		t.Fatalf("learned binding %v (%v), want the peer pion bound, %v", bd.peer, ok, good)
	}
	if _, err := uc.WriteTo([]byte{0x40, 0x01, 0, 5, 'h', 'e', 'l', 'l', 'o'}, s.Addr()); err != nil {
		t.Fatal(err)
	}
	_ = refused.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	if n, from, err := refused.ReadFrom(buf); err == nil {
		t.Fatalf("the refused address %v received %q from %v", bad, buf[:n], from)
	}

	// And learn itself refuses what the filter refuses.
	ch := newChannels(s.gen.q, time.Minute, func(net.IP) bool { return false })
	ch.learn(bindRequest{key: chanKey{ck, 0x4002}, peer: good, at: time.Now()}, uc.LocalAddr(), nil)
	if len(ch.bound) != 0 {
		t.Fatal("learned a binding the filter refuses")
	}
}

// TestBurstsKeepOrder: a burst of datagrams (the way a video frame's
// packets come) goes through the batched fast paths both ways, every one
// arriving and in the order sent: batches are flushed before the reader
// blocks, so nothing waits for more traffic.
func TestBurstsKeepOrder(t *testing.T) {
	s := startServer(t, allowStreamers)
	u, p := creds(t, time.Hour)
	_, relay := clientOver(t, s, "udp", u, p)
	peer := echoPeer(t, streamIP)
	relayEcho(t, relay, []*net.UDPAddr{peer}, 5) // the channel is bound
	before, beforeBack := s.fast.hits.Load(), s.gen.backHits.Load()
	const burst = 200
	for i := range burst {
		if _, err := relay.WriteTo([]byte(fmt.Sprintf("burst %03d", i)), peer); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	for i := range burst {
		_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("echo %d of %d: %v", i, burst, err)
		}
		if want := fmt.Sprintf("burst %03d", i); string(buf[:n]) != want {
			t.Fatalf("echo %d: got %q, want %q (lost or reordered)", i, buf[:n], want)
		}
	}
	if hits := s.fast.hits.Load() - before; hits != burst {
		t.Errorf("%d of %d datagrams took the fast path to the peer", hits, burst)
	}
	if hits := s.gen.backHits.Load() - beforeBack; hits != burst {
		t.Errorf("%d of %d echoes took the fast path back", hits, burst)
	}
}

// relay is the fast path client → peer as one call, for the tests: the
// listener's reader uses lookup and sends in batches (rewrite.go).
func (t *channels) relay(b []byte, from net.Addr) bool {
	bd, payload, ok := t.lookup(b, from)
	if ok {
		_, _ = bd.relay.WriteTo(payload, bd.peer)
	}
	return ok
}
