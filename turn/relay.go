package turn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v3"
	"golang.org/x/time/rate"
)

// ErrTooManyAllocations is returned when the server holds its cap of relays.
var ErrTooManyAllocations = errors.New("allocation cap reached")

// cappedGenerator wraps pion's port-range generator: pion/turn v3 has no
// quota hook, so caps live on the relay sockets it hands out.
type cappedGenerator struct {
	inner     *turn.RelayAddressGeneratorPortRange
	max       int64
	bytesPerS int
	lifetime  time.Duration
	live      atomic.Int64
	m         *metrics
	ports     *portSet // refused peer ports
}

// portSet is a set of ports, read on every relayed datagram.
type portSet [65536 / 64]uint64

func (p *portSet) add(port int) {
	if port > 0 && port < 65536 {
		p[port/64] |= 1 << (port % 64)
	}
}

func (p *portSet) has(port int) bool {
	return p != nil && port > 0 && port < 65536 && p[port/64]&(1<<(port%64)) != 0
}

func (g *cappedGenerator) Validate() error { return g.inner.Validate() }

// AllocatePacketConn creates a relay socket unless the cap is reached.
func (g *cappedGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	if g.live.Add(1) > g.max {
		g.live.Add(-1)
		g.m.capped.Inc()
		return nil, nil, ErrTooManyAllocations
	}
	c, addr, err := g.inner.AllocatePacketConn(network, port)
	if err != nil {
		g.live.Add(-1)
		return nil, nil, err
	}
	g.m.allocations.Inc()
	cc := &cappedConn{PacketConn: c, g: g}
	if g.bytesPerS > 0 {
		burst := max(g.bytesPerS/4, 64<<10)
		cc.in = rate.NewLimiter(rate.Limit(g.bytesPerS), burst)
		cc.out = rate.NewLimiter(rate.Limit(g.bytesPerS), burst)
	}
	if g.lifetime > 0 {
		cc.timer = time.AfterFunc(g.lifetime, func() { _ = cc.Close() })
	}
	return cc, addr, nil
}

// AllocateConn is for TCP relays (RFC 6062), which Metal does not offer.
func (g *cappedGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("tcp relays are not supported")
}

// cappedConn is one relay socket with a bandwidth cap in each direction and
// a maximum lifetime. Packets over the cap are dropped, as a congested link
// would.
type cappedConn struct {
	net.PacketConn
	g       *cappedGenerator
	in, out *rate.Limiter
	timer   *time.Timer
	once    sync.Once
}

// WriteTo sends toward the peer, unless its port is one of the cluster's
// (refused on any address: the permission was for the IP only).
func (c *cappedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && c.g.ports.has(ua.Port) {
		c.g.m.portDenied.Inc()
		return len(p), nil
	}
	if c.out != nil && !c.out.AllowN(time.Now(), len(p)) {
		c.g.m.dropped.Add(float64(len(p)))
		return len(p), nil
	}
	n, err := c.PacketConn.WriteTo(p, addr)
	if err == nil {
		c.g.m.relayed.WithLabelValues("to_peer").Add(float64(n))
	}
	return n, err
}

// ReadFrom receives from peers, dropping what exceeds the cap.
func (c *cappedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if c.in != nil && !c.in.AllowN(time.Now(), n) {
			c.g.m.dropped.Add(float64(n))
			continue
		}
		c.g.m.relayed.WithLabelValues("to_client").Add(float64(n))
		return n, addr, nil
	}
}

// Close releases the relay and its slot under the cap.
func (c *cappedConn) Close() error {
	var err error
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		err = c.PacketConn.Close()
		c.g.live.Add(-1)
		c.g.m.allocations.Dec()
	})
	return err
}
