package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/net/ipv4"
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

// maxBindingsPerRelay bounds the bindings learned for one relay socket
// (pion has no such bound: a client may bind 16,384 channels); past it,
// pion relays the rest. With the allocation cap it bounds the table.
const maxBindingsPerRelay = 64

// inboundMTU is pion's read buffer: a datagram that fills it may be
// truncated, and pion drops it.
const inboundMTU = 1600

type channels struct {
	q     *quotas
	ttl   time.Duration
	allow func(net.IP) bool // the peer filter, checked again before a binding is learned

	mu       sync.RWMutex
	bound    map[chanKey]binding
	perRelay map[*cappedConn]int
	lastGC   time.Time

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

// bindRequest is a ChannelBind request a listener has just read. pion
// handles one listener's datagrams one at a time, answering each before it
// reads the next, so the answer to the request a listener read last is the
// next ChannelBind answer it writes: the listener keeps that one request
// (fixingPacketConn.bind), never a table that a flood could fill or an
// unanswered request could leave behind.
type bindRequest struct {
	id   [stun.TransactionIDSize]byte
	key  chanKey
	peer *net.UDPAddr
	at   time.Time
}

func newChannels(q *quotas, ttl time.Duration, allow func(net.IP) bool) *channels {
	return &channels{q: q, ttl: ttl, allow: allow, bound: map[chanKey]binding{}, perRelay: map[*cappedConn]int{}}
}

func udpKey(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// parseBind reads a ChannelBind request from a client; ok is false for
// anything else.
func parseBind(b []byte, from net.Addr) (r bindRequest, ok bool) {
	if len(b) < 20 || b[0] != 0x00 || b[1] != 0x09 { // ChannelBind request
		return r, false
	}
	client, ok := udpKey(from)
	if !ok {
		return r, false
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if msg.Decode() != nil {
		return r, false
	}
	ch, err := msg.Get(stun.AttrChannelNumber)
	if err != nil || len(ch) < 2 || ch[0] < 0x40 || ch[0] > 0x7F {
		return r, false // RFC 8656 channels are 0x4000-0x7FFF; pion does not check
	}
	var peer stun.XORMappedAddress
	if peer.GetFromAs(msg, stun.AttrXORPeerAddress) != nil {
		return r, false
	}
	return bindRequest{
		id:   msg.TransactionID,
		key:  chanKey{client, binary.BigEndian.Uint16(ch)},
		peer: &net.UDPAddr{IP: append(net.IP(nil), peer.IP...), Port: peer.Port},
		at:   time.Now(),
	}, true
}

// isBindSuccess reports whether b is a ChannelBind success answer for id.
func isBindSuccess(b []byte, id [stun.TransactionIDSize]byte) bool {
	return len(b) >= 20 && b[0] == 0x01 && b[1] == 0x09 && string(b[8:20]) == string(id[:])
}

// learn makes a binding pion granted (the request r, answered with success
// to the client to, on the listener socket out) the fast paths'. The peer is
// checked again against the filter and the refused ports: the fast paths
// never send where pion would not.
func (t *channels) learn(r bindRequest, to net.Addr, out net.PacketConn) {
	client, ok := udpKey(to)
	if !ok || client != r.key.client {
		return
	}
	if t.allow != nil && !t.allow(r.peer.IP) {
		return
	}
	relay := t.q.relayOf(to)
	if relay == nil || relay.closed.Load() || relay.g.ports.has(r.peer.Port) {
		return
	}
	until := r.at.Add(t.ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gcLocked(r.at)
	if old, have := t.bound[r.key]; !have || old.relay != relay {
		if t.perRelay[relay] >= maxBindingsPerRelay {
			return
		}
		t.perRelay[relay]++
		if have { // the client's previous relay, closed: its count moves
			if t.perRelay[old.relay]--; t.perRelay[old.relay] <= 0 {
				delete(t.perRelay, old.relay)
			}
		}
	}
	t.bound[r.key] = binding{relay: relay, peer: r.peer, until: until}
	// A channel binding is a permission for as long (pion delivers on a
	// bound channel without looking at permissions): the bandwidth cap
	// counts its datagrams.
	if ip, ok := netip.AddrFromSlice(r.peer.IP); ok {
		relay.permit(ip.Unmap(), until)
	}
	if out != nil {
		ua := to.(*net.UDPAddr)
		b := back{number: r.key.number, client: &net.UDPAddr{IP: ua.IP, Port: ua.Port}, out: out, until: until}
		if bc, ok := out.(*batchConn); ok {
			b.bout = bc.r.pc
		}
		relay.bindBack(r.peer, b)
	}
}

// back is a channel seen from the relay socket: datagrams from its peer go
// to client, as ChannelData numbered number, on the listener socket out.
type back struct {
	number uint16
	client *net.UDPAddr
	out    net.PacketConn
	bout   *ipv4.PacketConn // out's batch writer (sendmmsg), when out is a batchConn
	until  time.Time
}

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
	if len(next) > maxBindingsPerRelay {
		return
	}
	c.backs.Store(&next)
}

// sendBack sends a peer's datagram to the client as ChannelData and reports
// true, or reports false for pion to handle it.
func (c *cappedConn) sendBack(b []byte, from net.Addr) bool {
	r, ok := c.backOf(b, from)
	if !ok {
		return false
	}
	if len(c.scratch) < 4+len(b) {
		c.scratch = make([]byte, 4+max(len(b), inboundMTU))
	}
	n := frame(c.scratch, r.number, b)
	c.g.backHits.Add(1) // before the write: the client may read it first
	_, _ = r.out.WriteTo(c.scratch[:n], r.client)
	return true
}

// frame writes b as ChannelData on channel number into dst, which holds
// 4+len(b) bytes at least, and returns its length.
func frame(dst []byte, number uint16, b []byte) int {
	dst[0], dst[1] = byte(number>>8), byte(number)
	dst[2], dst[3] = byte(len(b)>>8), byte(len(b))
	return 4 + copy(dst[4:], b)
}

// backOf finds the live channel back to the client of a peer's datagram.
func (c *cappedConn) backOf(b []byte, from net.Addr) (back, bool) {
	m := c.backs.Load()
	if m == nil {
		return back{}, false
	}
	peer, ok := udpKey(from)
	if !ok {
		return back{}, false
	}
	r, ok := (*m)[peer]
	if !ok || len(b) > 0xFFFF || !time.Now().Before(r.until) {
		return back{}, false
	}
	return r, true
}

// gcLocked drops bindings that expired or whose relay closed, at most
// once a second.
func (t *channels) gcLocked(now time.Time) {
	if now.Sub(t.lastGC) <= time.Second {
		return
	}
	t.lastGC = now
	for k, bd := range t.bound {
		if !now.Before(bd.until) || bd.relay.closed.Load() {
			delete(t.bound, k)
			if t.perRelay[bd.relay]--; t.perRelay[bd.relay] <= 0 {
				delete(t.perRelay, bd.relay)
			}
		}
	}
}

// lookup finds the live binding of a client's ChannelData datagram and its
// payload, counted as relayed here; false for pion to handle it.
func (t *channels) lookup(b []byte, from net.Addr) (binding, []byte, bool) {
	if len(b) < 4 || b[0]&0xC0 != 0x40 {
		return binding{}, nil, false
	}
	size := int(b[2])<<8 | int(b[3])
	if 4+size > len(b) || len(b) >= inboundMTU {
		return binding{}, nil, false // pion refuses it, or drops it as possibly truncated
	}
	client, ok := udpKey(from)
	if !ok {
		return binding{}, nil, false
	}
	t.mu.RLock()
	bd, ok := t.bound[chanKey{client, uint16(b[0])<<8 | uint16(b[1])}]
	t.mu.RUnlock()
	if !ok || bd.relay.closed.Load() || !time.Now().Before(bd.until) {
		return binding{}, nil, false
	}
	t.hits.Add(1) // before the write: the peer's echo may come back first
	return bd, b[4 : 4+size], true
}
