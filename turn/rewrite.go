package turn

import (
	"net"
	"sync"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/turn/v3"
)

// pion/turn v3 answers a failed authentication with 400 Bad Request and a
// refused permission with an error response that has no code at all. Metal
// answers as RFC 8656 says: 401 Unauthorized for expired, forged or unknown
// credentials, 403 Forbidden for a peer the filter refuses. The auth and
// permission handlers mark the client address; the next error response to
// that address gets the right code.

type verdicts struct {
	mu   sync.Mutex
	mark map[string]verdict
}

type verdict struct {
	code stun.ErrorCode
	at   time.Time
}

func (v *verdicts) set(addr net.Addr, code stun.ErrorCode) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mark == nil {
		v.mark = map[string]verdict{}
	}
	now := time.Now()
	for k, m := range v.mark {
		if now.Sub(m.at) > 5*time.Second {
			delete(v.mark, k)
		}
	}
	v.mark[addr.String()] = verdict{code, now}
}

// fix returns p with the marked error code when p is an error response to a
// marked address.
func (v *verdicts) fix(p []byte, addr net.Addr) []byte {
	if addr == nil || !stun.IsMessage(p) {
		return p
	}
	v.mu.Lock()
	m, ok := v.mark[addr.String()]
	if ok {
		delete(v.mark, addr.String())
	}
	v.mu.Unlock()
	if !ok {
		return p
	}
	msg := &stun.Message{Raw: append([]byte(nil), p...)}
	if err := msg.Decode(); err != nil || msg.Type.Class != stun.ClassErrorResponse {
		return p
	}
	reason := "Unauthorized"
	if m.code == stun.CodeForbidden {
		reason = "Forbidden"
	}
	setters := []stun.Setter{stun.NewTransactionIDSetter(msg.TransactionID), msg.Type, &stun.ErrorCodeAttribute{Code: m.code, Reason: []byte(reason)}}
	var realm stun.Realm
	if err := realm.GetFrom(msg); err == nil {
		setters = append(setters, realm)
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
}

func (c *fixingPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil && stun.IsMessage(p[:n]) {
		n = capLifetime(p, n, c.lifetime)
		if forged(p[:n], c.secret) {
			c.v.set(addr, stun.CodeUnauthorized)
			c.m.authFailed.Inc()
		}
	}
	return n, addr, err
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
	if _, err := c.PacketConn.WriteTo(c.v.fix(p, addr), addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// fixingListener rewrites error responses on TCP connections.
type fixingListener struct {
	net.Listener
	v *verdicts
}

func (l *fixingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &fixingConn{Conn: c, v: l.v}, nil
}

type fixingConn struct {
	net.Conn
	v *verdicts
}

func (c *fixingConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(c.v.fix(p, c.RemoteAddr())); err != nil {
		return 0, err
	}
	return len(p), nil
}
