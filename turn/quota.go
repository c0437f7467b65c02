package turn

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v2"
)

// Quotas. pion/turn v3 has no hook that knows who asks for a relay, so
// Metal follows allocations on the wire: an Allocate request names its
// username and comes from a client address; pion's success answer to it
// names the relay port; the relay socket, closed when pion drops the
// allocation, knows its port. From that, live relays are counted per
// username (one session's credential) and per client IP, and a request
// beyond either cap is answered 486 Allocation Quota Reached before pion
// sees it. The same table tells which peers a relay has permitted, so the
// relay's bandwidth limiter only counts datagrams pion will deliver.
type quotas struct {
	perUser, perSpectators, perIP int
	held                          *held // credentials that outlive their TTL (held.go)

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]owner // Allocate asked, not answered
	byPort  map[int]owner
	byUser  map[string]int
	byIP    map[netip.Addr]int
	conns   map[int]*cappedConn // relay sockets by port
	client  map[string]int      // client transport address (clientKey): its relay port
	lastGC  time.Time
}

type owner struct {
	user    string // the session: a TURN REST username is expiry:session
	ip      netip.Addr
	client  string // the client address
	key     string // clientKey of it
	at      time.Time
	account string // the whole username, for held.go
}

// sessionOf is the quota account of a TURN REST username
// ("expiry:session"): every credential issued for a session counts against
// one quota. The gateway names each spectator of a session
// "<session>-w<random>", a fresh name on every poll of the share link, so
// all of a session's spectators share one account, "<session>-w", with a
// cap of its own: a share link handed around cannot take relays without
// bound, nor take the owner's.
func sessionOf(username string) (account string, spectators bool) {
	if i := strings.IndexByte(username, ':'); i >= 0 {
		username = username[i+1:]
	}
	if i := strings.LastIndex(username, "-w"); i > 0 && isHex(username[i+2:]) {
		return username[:i+2], true
	}
	return username, false
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func newQuotas(perUser, perSpectators, perIP int, h *held) *quotas {
	return &quotas{perUser: perUser, perSpectators: perSpectators, perIP: perIP, held: h,
		pending: map[[stun.TransactionIDSize]byte]owner{}, byPort: map[int]owner{},
		byUser: map[string]int{}, byIP: map[netip.Addr]int{}, conns: map[int]*cappedConn{}, client: map[string]int{}}
}

func addrIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// request sees an Allocate request from src; it reports false when the
// username or the address holds its quota (answer 486).
func (q *quotas) request(msg *stun.Message, src net.Addr) bool {
	if msg.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) {
		return true
	}
	var user stun.Username
	if user.GetFrom(msg) != nil {
		return true // the unauthenticated first try: pion answers 401
	}
	account, spectators := sessionOf(user.String())
	limit := q.perUser
	if spectators {
		limit = q.perSpectators
	}
	o := owner{user: account, account: user.String(), ip: addrIP(src), client: src.String(), key: clientKey(src), at: time.Now()}
	q.mu.Lock()
	defer q.mu.Unlock()
	if o.at.Sub(q.lastGC) > time.Second {
		q.lastGC = o.at
		for k, p := range q.pending {
			if o.at.Sub(p.at) > 10*time.Second {
				delete(q.pending, k)
			}
		}
	}
	if _, again := q.pending[msg.TransactionID]; again {
		return true // a retransmission: counted once
	}
	// Requests not answered yet count too: a burst from many ports must not
	// all pass while the count still reads zero.
	users, ips := q.byUser[o.user], q.byIP[o.ip]
	for _, p := range q.pending {
		if p.user == o.user {
			users++
		}
		if p.ip == o.ip {
			ips++
		}
	}
	if (limit > 0 && users >= limit) || (q.perIP > 0 && ips >= q.perIP) || len(q.pending) >= maxPending {
		return false
	}
	q.pending[msg.TransactionID] = o
	return true
}

// maxPending bounds Allocate requests waiting for pion's answer.
const maxPending = 4096

// answered sees pion's answer to the client to; a successful Allocate
// makes the relay port the requester's (the answer must go to the client
// that asked), an error frees the request's place.
func (q *quotas) answered(msg *stun.Message, to net.Addr) {
	if msg.Type == stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse) {
		q.mu.Lock()
		delete(q.pending, msg.TransactionID)
		q.mu.Unlock()
		return
	}
	if msg.Type != stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse) {
		return
	}
	var relayed stun.XORMappedAddress
	if relayed.GetFromAs(msg, stun.AttrXORRelayedAddress) != nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	o, ok := q.pending[msg.TransactionID]
	if !ok || (to != nil && clientKey(to) != o.key) {
		return // not the answer to that client's request
	}
	delete(q.pending, msg.TransactionID)
	if _, taken := q.byPort[relayed.Port]; taken {
		return // a retransmitted answer
	}
	q.byPort[relayed.Port] = o
	q.byUser[o.user]++
	q.byIP[o.ip]++
	q.client[o.key] = relayed.Port
	if c := q.conns[relayed.Port]; c != nil {
		c.tracked.Store(true)
	}
	if q.held != nil {
		q.held.note(o.account, o.client, o.at)
	}
}

// opened registers a relay socket by its port.
func (q *quotas) opened(port int, c *cappedConn) {
	q.mu.Lock()
	q.conns[port] = c
	q.mu.Unlock()
}

// closed releases a relay port's quota, if c still holds the port.
func (q *quotas) closed(port int, c *cappedConn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conns[port] != c {
		return
	}
	delete(q.conns, port)
	o, ok := q.byPort[port]
	if !ok {
		return
	}
	delete(q.byPort, port)
	if q.byUser[o.user]--; q.byUser[o.user] <= 0 {
		delete(q.byUser, o.user)
	}
	if q.byIP[o.ip]--; q.byIP[o.ip] <= 0 {
		delete(q.byIP, o.ip)
	}
	if q.client[o.key] == port {
		delete(q.client, o.key)
	}
}

// permitted records that the relay of client may receive from peer (pion
// granted the permission); it lasts pion's 5 minutes, renewed with it.
func (q *quotas) permitted(client net.Addr, peer net.IP) {
	q.mu.Lock()
	c := q.conns[q.client[clientKey(client)]]
	q.mu.Unlock()
	if c == nil {
		return
	}
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return
	}
	c.permit(ip.Unmap(), time.Now().Add(5*time.Minute))
}

// relayOf is the relay socket of client's allocation, nil if none is known.
func (q *quotas) relayOf(client net.Addr) *cappedConn {
	q.mu.Lock()
	defer q.mu.Unlock()
	port, ok := q.client[clientKey(client)]
	if !ok {
		return nil
	}
	return q.conns[port]
}

// clientKey names a client's transport address with its protocol: a UDP
// and a TCP client may share an address and port, never an allocation.
func clientKey(a net.Addr) string { return a.Network() + " " + a.String() }

// quotaExceeded builds the 486 answer to an Allocate request.
func quotaExceeded(req *stun.Message, realm string) []byte {
	msg, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeAllocQuotaReached, Reason: []byte("Allocation Quota Reached")},
		stun.NewRealm(realm))
	if err != nil {
		return nil
	}
	return msg.Raw
}
