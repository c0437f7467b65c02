package e2e

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/stun/v2"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/metal-stream/metal/turn"
)

// rawAlloc is a TURN allocation driven by hand on a plain UDP socket: the
// benchmark's clients send and receive ChannelData with sendmmsg and
// recvmmsg, so the load generator costs little next to the server it
// measures (pion's client decodes every datagram on its own goroutines,
// and on 2 cores it, not the server, set the pace).
type rawAlloc struct {
	conn    *net.UDPConn
	server  *net.UDPAddr
	relay   *net.UDPAddr
	channel uint16
	auth    []stun.Setter // username, realm, nonce, integrity
}

// rawAllocate allocates a relay on server (long-term credentials from the
// REST secret, the 401 challenge answered) and binds channel to peer.
func rawAllocate(server string, peer *net.UDPAddr, channel uint16) (*rawAlloc, error) {
	srv, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	a := &rawAlloc{conn: conn, server: srv, channel: channel}
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	challenge, err := a.roundTrip(stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var realm stun.Realm
	var nonce stun.Nonce
	if realm.GetFrom(challenge) != nil || nonce.GetFrom(challenge) != nil {
		conn.Close()
		return nil, errors.New("allocate: no 401 challenge")
	}
	user, pass, err := turn.Credentials(turnSecret, "bench", time.Hour)
	if err != nil {
		conn.Close()
		return nil, err
	}
	a.auth = []stun.Setter{stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass)}
	res, err := a.authed(stun.MethodAllocate, transport)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		conn.Close()
		return nil, fmt.Errorf("allocate: %w", err)
	}
	a.relay = &net.UDPAddr{IP: relayed.IP, Port: relayed.Port}
	peerAddr := stun.XORMappedAddress{IP: peer.IP, Port: peer.Port}
	num := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(channel >> 8), byte(channel), 0, 0}}
	if _, err := a.authed(stun.MethodChannelBind, num, setterAs{peerAddr, stun.AttrXORPeerAddress}); err != nil {
		a.close()
		return nil, fmt.Errorf("channel bind: %w", err)
	}
	return a, nil
}

type setterAs struct {
	addr stun.XORMappedAddress
	t    stun.AttrType
}

func (s setterAs) AddTo(m *stun.Message) error { return s.addr.AddToAs(m, s.t) }

// authed sends an authenticated request and returns the success answer.
func (a *rawAlloc) authed(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	setters := append(append(attrs, a.auth[:3]...), a.auth[3], stun.Fingerprint)
	res, err := a.roundTrip(stun.NewType(method, stun.ClassRequest), setters...)
	if err != nil {
		return nil, err
	}
	if res.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		return nil, fmt.Errorf("%s: %s", method, code)
	}
	return res, nil
}

// roundTrip sends a request and reads its answer (ChannelData and
// indications on the way are skipped).
func (a *rawAlloc) roundTrip(t stun.MessageType, setters ...stun.Setter) (*stun.Message, error) {
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, t}, setters...)...)
	if err != nil {
		return nil, err
	}
	if _, err := a.conn.WriteToUDP(m.Raw, a.server); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(3 * time.Second)
	_ = a.conn.SetReadDeadline(deadline)
	defer func() { _ = a.conn.SetReadDeadline(time.Time{}) }()
	for {
		n, _, err := a.conn.ReadFromUDP(buf)
		if err != nil {
			return nil, err
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() == nil && res.TransactionID == m.TransactionID {
			return res, nil
		}
	}
}

// close deallocates (a Refresh with lifetime 0) and closes the socket: the
// servers' allocation caps see every run's relays go.
func (a *rawAlloc) close() {
	_, _ = a.authed(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	a.conn.Close()
}

// blast sends p to dst from c in batches of 32 until stop.
func blast(c *net.UDPConn, dst *net.UDPAddr, p []byte, stop time.Time) {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, 32)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{p}, Addr: dst}
	}
	for time.Now().Before(stop) {
		_, _ = pc.WriteBatch(msgs, 0)
	}
}

// drain counts datagrams read from c in batches until c is closed, or its
// read deadline passes. Its receive buffer is made large (8 MiB, past
// rmem_max: the tests run as root), so that a receiver sharing its core
// with the generator is not what drops datagrams: what is lost is lost at
// the server.
func drain(c *net.UDPConn, count func(int)) {
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
	}
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, 32)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return
		}
		count(n)
	}
}
