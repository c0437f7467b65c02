package turn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/turn/v3"
)

// pion/turn v3 answers a failed authentication with 400 Bad Request and a
// refused permission with an error response that has no code at all. Metal
// answers as RFC 8656 says: 401 Unauthorized for expired, forged or unknown
// credentials, with REALM and NONCE (RFC 8489 §9.2.4: the nonce the request
// carried, which pion had just accepted), and 403 Forbidden for a peer the
// filter refuses. The auth and permission handlers mark the client address;
// the next such error response to that address gets the right code. Other
// answers (438 Stale Nonce with its fresh NONCE, pion's own 401 with one)
// pass untouched.

type verdicts struct {
	mu     sync.Mutex
	mark   map[string]verdict
	lastGC time.Time
	realm  string // put in a 401 that lacks one
}

type verdict struct {
	code  stun.ErrorCode
	at    time.Time
	nonce []byte // the nonce of the client's request, for a 401
}

func (v *verdicts) set(addr net.Addr, code stun.ErrorCode) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mark == nil {
		v.mark = map[string]verdict{}
	}
	now := time.Now()
	v.gcLocked(now)
	k := addr.String()
	m, ok := v.mark[k]
	if !ok && len(v.mark) >= maxVerdicts {
		return
	}
	m.code, m.at = code, now
	v.mark[k] = m
}

// request notes the nonce of a request from addr: if the answer becomes a
// 401, it carries that nonce.
func (v *verdicts) request(addr net.Addr, msg *stun.Message) {
	var n stun.Nonce
	if n.GetFrom(msg) != nil {
		return
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mark == nil {
		v.mark = map[string]verdict{}
	}
	v.gcLocked(now)
	k := addr.String()
	m, ok := v.mark[k]
	if !ok && len(v.mark) >= maxVerdicts {
		return // full (a flood of spoofed sources): this 401 goes without a nonce
	}
	m.nonce, m.at = append([]byte(nil), n...), now
	v.mark[k] = m
}

// maxVerdicts bounds the table: entries live 5 s.
const maxVerdicts = 65536

// gcLocked drops entries older than 5 s, at most once a second.
func (v *verdicts) gcLocked(now time.Time) {
	if now.Sub(v.lastGC) <= time.Second {
		return
	}
	v.lastGC = now
	for k, m := range v.mark {
		if now.Sub(m.at) > 5*time.Second {
			delete(v.mark, k)
		}
	}
}

// fix returns p with the marked error code when p is an error response to a
// marked address.
func (v *verdicts) fix(p []byte, addr net.Addr) []byte {
	if addr == nil || !stun.IsMessage(p) || stunClass(p) != stun.ClassErrorResponse {
		return p
	}
	v.mu.Lock()
	m, ok := v.mark[addr.String()]
	v.mu.Unlock()
	if !ok || m.code == 0 || time.Since(m.at) > 5*time.Second {
		return p
	}
	msg := &stun.Message{Raw: append([]byte(nil), p...)}
	if err := msg.Decode(); err != nil || msg.Type.Class != stun.ClassErrorResponse {
		return p
	}
	// Only pion's 400 (a failed authentication), its code-less refusal of a
	// permission and its nonce-less 401 refusal of a channel binding are
	// rewritten; a 438, or a 401 challenge with its fresh nonce, is not.
	var have stun.ErrorCodeAttribute
	if err := have.GetFrom(msg); err == nil && have.Code != stun.CodeBadRequest &&
		!(have.Code == stun.CodeUnauthorized && m.code == stun.CodeForbidden && !msg.Contains(stun.AttrNonce)) {
		return p
	}
	v.mu.Lock()
	delete(v.mark, addr.String())
	v.mu.Unlock()
	reason := "Unauthorized"
	if m.code == stun.CodeForbidden {
		reason = "Forbidden"
	}
	setters := []stun.Setter{stun.NewTransactionIDSetter(msg.TransactionID), msg.Type, &stun.ErrorCodeAttribute{Code: m.code, Reason: []byte(reason)}}
	var realm stun.Realm
	if err := realm.GetFrom(msg); err == nil {
		setters = append(setters, realm)
	} else if m.code == stun.CodeUnauthorized && v.realm != "" {
		setters = append(setters, stun.NewRealm(v.realm))
	}
	if m.code == stun.CodeUnauthorized && len(m.nonce) > 0 {
		setters = append(setters, stun.NewNonce(string(m.nonce)))
	}
	out, err := stun.Build(setters...)
	if err != nil {
		return p
	}
	return out.Raw
}

// fixingPacketConn rewrites error responses on a UDP listener. It also
// checks MESSAGE-INTEGRITY of incoming requests itself, because pion answers
// a wrong password (a forged credential) with 400 before any hook runs.
type fixingPacketConn struct {
	net.PacketConn
	v        *verdicts
	secret   string
	m        *metrics
	lifetime time.Duration // see capLifetime
	q        *quotas
	ch       *channels // the ChannelData fast path (fastpath.go); nil: pion relays all
	// wb gathers what the fast path sends to peers from one batch read
	// (batch.go); only pion's reader of this listener uses it.
	wb *writeBatch

	bmu     sync.Mutex
	bind    bindRequest // the ChannelBind request read last, if hasBind
	hasBind bool
}

func (c *fixingPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	bc, _ := c.PacketConn.(*batchConn)
	if c.wb == nil && bc != nil && c.ch != nil {
		c.wb = newWriteBatch()
	}
	for {
		if c.wb != nil && c.wb.n > 0 && !bc.r.buffered() {
			c.wb.flush() // the batch is spent: send before blocking
		}
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if !stun.IsMessage(p[:n]) {
			if c.ch != nil {
				// Whatever pion answers next is not a ChannelBind's: the
				// request slot holds only the request pion is handling.
				c.bmu.Lock()
				c.hasBind = false
				c.bmu.Unlock()
				if bd, payload, ok := c.ch.lookup(p[:n], addr); ok {
					if c.wb != nil {
						bd.relay.writeBatched(c.wb, payload, bd.peer)
					} else {
						_, _ = bd.relay.WriteTo(payload, bd.peer)
					}
					continue
				}
			}
			c.flushPeers()
			return n, addr, err
		}
		c.flushPeers() // before pion acts on a request (a refresh, a permission)
		n = capLifetime(p, n, c.lifetime)
		if c.ch != nil {
			r, ok := parseBind(p[:n], addr)
			c.bmu.Lock()
			c.bind, c.hasBind = r, ok
			c.bmu.Unlock()
		}
		if refusal := c.v.inspect(p[:n], addr, c.secret, c.m, c.q); refusal != nil {
			_, _ = c.PacketConn.WriteTo(refusal, addr)
			continue
		}
		return n, addr, err
	}
}

func (c *fixingPacketConn) flushPeers() {
	if c.wb != nil && c.wb.n > 0 {
		c.wb.flush()
	}
}

// inspect notes a request's nonce and marks a forged one (a wrong
// MESSAGE-INTEGRITY) for a 401. For an Allocate beyond the quotas it
// returns the 486 answer to send instead of passing the request on.
func (v *verdicts) inspect(b []byte, addr net.Addr, secret string, m *metrics, q *quotas) []byte {
	if stunClass(b) != stun.ClassRequest {
		return nil
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if msg.Decode() != nil || !msg.Contains(stun.AttrNonce) {
		return nil
	}
	v.request(addr, msg)
	if forged(b, secret) {
		v.set(addr, stun.CodeUnauthorized)
		m.authFailed.Inc()
		return nil
	}
	if q != nil && !q.request(msg, addr) {
		m.quota.Inc()
		return quotaExceeded(msg, v.realm)
	}
	return nil
}

// stunClass reads the class of a STUN message from its first two bytes
// (no decoding: Data indications, one per relayed datagram before a
// channel is bound, pass here).
func stunClass(b []byte) stun.MessageClass {
	if len(b) < 2 {
		return stun.ClassIndication
	}
	t := uint16(b[0])<<8 | uint16(b[1])
	return stun.MessageClass((t>>7)&0x2 | (t>>4)&0x1)
}

// answered shows the quota table pion's Allocate answers.
func answered(q *quotas, p []byte, to net.Addr) {
	if q == nil || len(p) < 2 || p[0] != 0x01 || (p[1] != 0x03 && p[1] != 0x13) { // Allocate success, error
		return
	}
	msg := &stun.Message{Raw: append([]byte(nil), p...)}
	if msg.Decode() == nil {
		q.answered(msg, to)
	}
}

// forged reports whether b is a request whose MESSAGE-INTEGRITY does not
// match the key its USERNAME and REALM give under secret.
func forged(b []byte, secret string) bool {
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if msg.Decode() != nil || msg.Type.Class != stun.ClassRequest || !msg.Contains(stun.AttrMessageIntegrity) {
		return false
	}
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(msg) != nil || realm.GetFrom(msg) != nil {
		return false
	}
	key := turn.GenerateAuthKey(user.String(), realm.String(), restPassword(secret, user.String()))
	return stun.MessageIntegrity(key).Check(msg) != nil
}

func (c *fixingPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	answered(c.q, p, addr)
	if c.ch != nil && len(p) >= 20 && p[0] == 0x01 && p[1] == 0x09 { // ChannelBind success
		c.bmu.Lock()
		r, ok := c.bind, c.hasBind
		c.hasBind = false
		c.bmu.Unlock()
		if ok && isBindSuccess(p, r.id) {
			c.ch.learn(r, addr, c.PacketConn)
		}
	}
	if _, err := c.PacketConn.WriteTo(c.v.fix(p, addr), addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// fixingListener rewrites error responses on TCP connections.
type fixingListener struct {
	net.Listener
	v      *verdicts
	secret string
	m      *metrics
	q      *quotas
	idle   time.Duration
	max    int64 // connections at most; more are closed at once
	live   *atomic.Int64
	perIP  *ipCount // connections per client IP, capped at maxTCPPerIP
}

// maxTCPPerIP bounds one address's TCP and TLS connections, so one host
// cannot take every place under the cap.
const maxTCPPerIP = 32

type ipCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *ipCount) add(ip string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[ip] >= maxTCPPerIP {
		return false
	}
	c.n[ip]++
	return true
}

func (c *ipCount) done(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}

func (l *fixingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if l.max > 0 && l.live.Add(1) > l.max {
			l.live.Add(-1)
			l.m.tcpRefused.Inc()
			c.Close()
			continue
		} else if l.max <= 0 {
			l.live.Add(1)
		}
		if l.perIP != nil && !l.perIP.add(ip) {
			l.live.Add(-1)
			l.m.tcpRefused.Inc()
			c.Close()
			continue
		}
		return &fixingConn{Conn: c, v: l.v, secret: l.secret, m: l.m, q: l.q, idle: l.idle,
			done: func() {
				l.live.Add(-1)
				if l.perIP != nil {
					l.perIP.done(ip)
				}
			}}, nil
	}
}

type fixingConn struct {
	net.Conn
	v       *verdicts
	secret  string
	m       *metrics
	q       *quotas
	idle    time.Duration
	done    func()
	once    sync.Once
	in, out []byte // read from the client, not framed yet; framed, for pion
}

// Read frames the stream itself (STUN messages and ChannelData, RFC 8656
// §11.5), notes what ReadFrom notes on UDP for every STUN message, and
// leaves out an Allocate refused by the quotas (its 486 is answered here),
// whatever the segments the client sent; it ends a connection idle for
// longer than idle.
func (c *fixingConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.idle > 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		}
		var buf [4096]byte
		n, err := c.Conn.Read(buf[:])
		c.in = append(c.in, buf[:n]...)
		if ferr := c.frame(); ferr != nil {
			return 0, ferr
		}
		if err != nil {
			if len(c.out) == 0 {
				return 0, err
			}
			break
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return n, nil
}

// maxFrame bounds a frame (and what waits for the rest of one).
const maxFrame = 64 << 10

// frame moves every complete frame from in to out.
func (c *fixingConn) frame() error {
	for len(c.in) >= 4 {
		var size int
		switch {
		case c.in[0]&0xC0 == 0x40: // ChannelData: 4-byte header, padded to 4
			size = 4 + (int(c.in[2])<<8 | int(c.in[3]))
			size = (size + 3) &^ 3
		case c.in[0]&0xC0 == 0: // STUN: 20-byte header
			if len(c.in) < 20 {
				return nil
			}
			size = 20 + (int(c.in[2])<<8 | int(c.in[3]))
		default:
			// Not TURN: hand it to pion as it is, which ends the connection.
			c.out = append(c.out, c.in...)
			c.in = nil
			return nil
		}
		if size > maxFrame {
			return errFrameTooLarge
		}
		if len(c.in) < size {
			return nil
		}
		msg := c.in[:size]
		if stun.IsMessage(msg) {
			if refusal := c.v.inspect(msg, c.RemoteAddr(), c.secret, c.m, c.q); refusal != nil {
				if _, err := c.Conn.Write(refusal); err != nil {
					return err
				}
				c.in = c.in[size:]
				continue
			}
		}
		c.out = append(c.out, msg...)
		c.in = c.in[size:]
	}
	if len(c.in) == 0 {
		c.in = nil
	}
	return nil
}

var errFrameTooLarge = errors.New("turn: frame larger than 64 KiB")

// Close frees the connection's place under the listener's cap.
func (c *fixingConn) Close() error {
	c.once.Do(func() {
		if c.done != nil {
			c.done()
		}
	})
	return c.Conn.Close()
}

func (c *fixingConn) Write(p []byte) (int, error) {
	// A client that never reads must not hold pion's loop (and its
	// connection's place) forever.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	answered(c.q, p, c.RemoteAddr())
	if _, err := c.Conn.Write(c.v.fix(p, c.RemoteAddr())); err != nil {
		return 0, err
	}
	return len(p), nil
}
