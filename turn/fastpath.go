package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
)

// The hot paths, both ways.
//
// Client → peer. pion handles each ChannelData datagram with
// three debug log calls (one formats the client's address), a lookup of the
// allocation by five-tuple under the manager's lock and a linear search of
// its channels; Metal relayed about 0.7x coturn's datagrams in that
// direction. So Metal learns the channel bindings pion grants on its UDP
// listeners (the ChannelBind request on the way in, pion's success answer
// on the way out) and relays a client's ChannelData to the bound peer
// itself, through the relay socket pion would use: cappedConn.WriteTo, where
// the refused ports, the bandwidth cap and the counters apply. A datagram
// it does not know (no binding learned, the binding past the lifetime pion
// gave it, the relay closed) goes to pion as before.
//
// Peer → client, the streaming direction. pion reads each datagram from the
// relay socket, logs it at debug (boxing three values), searches the
// channels by peer and encodes a fresh ChannelData. The relay socket knows
// the same bindings by peer (cappedConn.backs) and, once its bandwidth cap
// has let a datagram through, sends the ChannelData to the client itself,
// on the listener socket pion would use; a peer without a live binding goes
// to pion (a Data indication, or a drop).

// channelBindTimeout is how long pion keeps a channel binding that is not
// refreshed (and what it is configured with, server.go).
const channelBindTimeout = 10 * time.Minute

// maxBindings bounds the learned bindings; past it, pion relays the rest.
const maxBindings = 1 << 16

type channels struct {
	q   *quotas
	ttl time.Duration

	mu      sync.RWMutex
	bound   map[chanKey]binding
	pending map[[stun.TransactionIDSize]byte]pendingBind // asked, not answered
	lastGC  time.Time

	hits atomic.Int64 // datagrams relayed here, not by pion
}

type chanKey struct {
	client netip.AddrPort
	number uint16
}

type binding struct {
	relay *cappedConn
	peer  *net.UDPAddr
	until time.Time // the request's arrival plus pion's lifetime: never after pion's own expiry
}

type pendingBind struct {
	key  chanKey
	peer *net.UDPAddr
	at   time.Time
}

func newChannels(q *quotas, ttl time.Duration) *channels {
	return &channels{q: q, ttl: ttl, bound: map[chanKey]binding{}, pending: map[[stun.TransactionIDSize]byte]pendingBind{}}
}

func udpKey(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// request notes a ChannelBind request from a client.
func (t *channels) request(b []byte, from net.Addr) {
	if len(b) < 20 || b[0] != 0x00 || b[1] != 0x09 { // ChannelBind request
		return
	}
	client, ok := udpKey(from)
	if !ok {
		return
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if msg.Decode() != nil {
		return
	}
	ch, err := msg.Get(stun.AttrChannelNumber)
	if err != nil || len(ch) < 2 {
		return
	}
	var peer stun.XORMappedAddress
	if peer.GetFromAs(msg, stun.AttrXORPeerAddress) != nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gcLocked(now)
	if len(t.pending) >= maxPending {
		return
	}
	t.pending[msg.TransactionID] = pendingBind{
		key:  chanKey{client, binary.BigEndian.Uint16(ch)},
		peer: &net.UDPAddr{IP: append(net.IP(nil), peer.IP...), Port: peer.Port},
		at:   now,
	}
}

// answered sees pion's answer to a client, sent on the listener socket out:
// a ChannelBind success makes the binding the fast paths'.
func (t *channels) answered(b []byte, to net.Addr, out net.PacketConn) {
	if len(b) < 20 || b[0] != 0x01 || (b[1] != 0x09 && b[1] != 0x19) { // ChannelBind success, error
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], b[8:20])
	t.mu.Lock()
	p, ok := t.pending[id]
	delete(t.pending, id)
	t.mu.Unlock()
	client, isUDP := udpKey(to)
	if !ok || !isUDP || b[1] != 0x09 || p.key.client != client {
		return
	}
	relay := t.q.relayOf(to)
	if relay == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, have := t.bound[p.key]; !have && len(t.bound) >= maxBindings {
		return
	}
	t.bound[p.key] = binding{relay: relay, peer: p.peer, until: p.at.Add(t.ttl)}
	if out != nil {
		ua := to.(*net.UDPAddr)
		relay.bindBack(p.peer, back{number: p.key.number, client: &net.UDPAddr{IP: ua.IP, Port: ua.Port}, out: out, until: p.at.Add(t.ttl)})
	}
}

// back is a channel seen from the relay socket: datagrams from its peer go
// to client, as ChannelData numbered number, on the listener socket out.
type back struct {
	number uint16
	client *net.UDPAddr
	out    net.PacketConn
	until  time.Time
}

// maxBacks bounds the bindings one relay socket follows; past it, pion
// relays the rest.
const maxBacks = 64

// bindBack adds (or refreshes) the channel to peer.
func (c *cappedConn) bindBack(peer *net.UDPAddr, b back) {
	key, ok := udpKey(peer)
	if !ok {
		return
	}
	c.bmu.Lock()
	defer c.bmu.Unlock()
	now := time.Now()
	next := map[netip.AddrPort]back{key: b}
	if cur := c.backs.Load(); cur != nil {
		for k, v := range *cur {
			if k != key && now.Before(v.until) {
				next[k] = v
			}
		}
	}
	if len(next) > maxBacks {
		return
	}
	c.backs.Store(&next)
}

// sendBack sends a peer's datagram to the client as ChannelData and reports
// true, or reports false for pion to handle it.
func (c *cappedConn) sendBack(b []byte, from net.Addr) bool {
	m := c.backs.Load()
	if m == nil {
		return false
	}
	peer, ok := udpKey(from)
	if !ok {
		return false
	}
	r, ok := (*m)[peer]
	if !ok || len(b) > 0xFFFF || !time.Now().Before(r.until) {
		return false
	}
	if len(c.scratch) < 4+len(b) {
		c.scratch = make([]byte, 4+max(len(b), 1600))
	}
	c.scratch[0], c.scratch[1] = byte(r.number>>8), byte(r.number)
	c.scratch[2], c.scratch[3] = byte(len(b)>>8), byte(len(b))
	copy(c.scratch[4:], b)
	_, _ = r.out.WriteTo(c.scratch[:4+len(b)], r.client)
	c.g.backHits.Add(1)
	return true
}

// gcLocked drops unanswered requests after 10 s and bindings that expired
// or whose relay closed, at most once a second.
func (t *channels) gcLocked(now time.Time) {
	if now.Sub(t.lastGC) <= time.Second {
		return
	}
	t.lastGC = now
	for k, p := range t.pending {
		if now.Sub(p.at) > 10*time.Second {
			delete(t.pending, k)
		}
	}
	for k, bd := range t.bound {
		if !now.Before(bd.until) || bd.relay.closed.Load() {
			delete(t.bound, k)
		}
	}
}

// relay sends a client's ChannelData datagram to its bound peer and reports
// true, or reports false for pion to handle it.
func (t *channels) relay(b []byte, from net.Addr) bool {
	if len(b) < 4 || b[0]&0xC0 != 0x40 {
		return false
	}
	size := int(b[2])<<8 | int(b[3])
	if 4+size > len(b) {
		return false // pion refuses it
	}
	client, ok := udpKey(from)
	if !ok {
		return false
	}
	t.mu.RLock()
	bd, ok := t.bound[chanKey{client, uint16(b[0])<<8 | uint16(b[1])}]
	t.mu.RUnlock()
	if !ok || bd.relay.closed.Load() || !time.Now().Before(bd.until) {
		return false
	}
	_, _ = bd.relay.WriteTo(b[4:4+size], bd.peer)
	t.hits.Add(1)
	return true
}
