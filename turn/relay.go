package turn

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v3"
	"github.com/prometheus/client_golang/prometheus"
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
	q         *quotas
	// toPeer and toClient are the relayed-bytes counters, looked up once
	// (a label lookup per datagram costs more than the datagram's syscall
	// bookkeeping).
	toPeer, toClient prometheus.Counter
	backHits         atomic.Int64 // datagrams sent back by the fast path (fastpath.go)
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
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok && g.q != nil {
		cc.port = ua.Port
		g.q.opened(cc.port, cc)
	}
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
	closed  atomic.Bool // read by the fast path (fastpath.go)
	port    int
	// permits are the peers pion has permitted (quota.go), replaced whole
	// on each change: the read path only loads the pointer. tracked is set
	// once the quota table knows the relay's client; until then, and past
	// maxPermits peers, every datagram is charged (fail closed).
	permits  atomic.Pointer[map[netip.Addr]time.Time]
	pmu      sync.Mutex
	tracked  atomic.Bool
	overflow atomic.Bool
	// backs are the channels of this relay's client by peer, for the fast
	// path back (fastpath.go), replaced whole on each change; scratch is
	// where a ChannelData is built (only pion's reader calls ReadFrom).
	backs   atomic.Pointer[map[netip.AddrPort]back]
	bmu     sync.Mutex
	scratch []byte
	// rd and wb are the batch reader of this socket and the batch of
	// ChannelData it sends back to clients (batch.go), made by pion's
	// reader, the only caller of ReadFrom; unbatched when the socket is
	// not a UDP socket. bw writes to peers in batches (any listener).
	rd      *batchReader
	wb      *writeBatch
	batched bool
	bw      batchWriter
}

// maxPermits bounds the peers one relay's limiter follows.
const maxPermits = 64

// permit records a permitted peer until the expiry.
func (c *cappedConn) permit(ip netip.Addr, until time.Time) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	next := map[netip.Addr]time.Time{ip: until}
	if cur := c.permits.Load(); cur != nil {
		now := time.Now()
		for k, v := range *cur {
			if k != ip && v.After(now) {
				next[k] = v
			}
		}
	}
	if len(next) > maxPermits {
		c.overflow.Store(true) // too many to follow: charge everything
		return
	}
	c.permits.Store(&next)
}

// counts reports whether a datagram from addr counts against the relay's
// bandwidth cap: one from a peer the client permitted (pion delivers it),
// or any while the relay's peers are not followed (no quota table, client
// not known yet, too many peers: fail closed).
func (c *cappedConn) counts(addr net.Addr, now time.Time) bool {
	if c.g.q == nil || !c.tracked.Load() || c.overflow.Load() {
		return true
	}
	m := c.permits.Load()
	if m == nil {
		return false
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	ip, _ := netip.AddrFromSlice(ua.IP)
	until, ok := (*m)[ip.Unmap()]
	return ok && until.After(now)
}

// WriteTo sends toward the peer, unless its port is one of the cluster's
// (refused on any address: the permission was for the IP only).
func (c *cappedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.mayWrite(len(p), addr) {
		return len(p), nil
	}
	n, err := c.PacketConn.WriteTo(p, addr)
	if err == nil {
		c.g.toPeer.Add(float64(n))
	}
	return n, err
}

// mayWrite applies the refused ports and the outbound cap to a datagram of
// n bytes toward addr.
func (c *cappedConn) mayWrite(n int, addr net.Addr) bool {
	if ua, ok := addr.(*net.UDPAddr); ok && c.g.ports.has(ua.Port) {
		c.g.m.portDenied.Inc()
		return false
	}
	if c.out != nil && !c.out.AllowN(time.Now(), n) {
		c.g.m.dropped.Add(float64(n))
		return false
	}
	return true
}

// writeBatched adds a datagram toward addr to a listener's batch w (the
// fast path, client → peer), under the same rules as WriteTo; unbatched
// when this socket cannot be.
func (c *cappedConn) writeBatched(w *writeBatch, p []byte, addr net.Addr) {
	pc := c.bw.of(c.PacketConn)
	if pc == nil {
		_, _ = c.WriteTo(p, addr)
		return
	}
	if !c.mayWrite(len(p), addr) {
		return
	}
	c.g.toPeer.Add(float64(len(p)))
	buf := w.slot(pc)
	w.commit(copy(buf, p), addr)
}

// ReadFrom receives from peers, dropping what exceeds the cap. Only a
// datagram from a permitted peer is charged to the cap: pion drops the
// others right after, and someone spraying a guessable relay port must not
// drain a real stream's budget. Datagrams on a channel go back to the
// client here, in batches (fastpath.go); the rest go to pion.
func (c *cappedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if !c.batched {
		c.batched = true
		if _, ok := c.PacketConn.(*net.UDPConn); ok {
			c.rd, c.wb = newBatchReader(c.PacketConn), newWriteBatch()
		}
	}
	for {
		b, addr, err := c.readOne(p)
		if err != nil {
			return 0, addr, err
		}
		n := len(b)
		if c.in != nil {
			now := time.Now()
			if !c.counts(addr, now) {
				c.flushBack()
				return copy(p, b), addr, nil // pion drops it, unpermitted
			}
			if !c.in.AllowN(now, n) {
				c.g.m.dropped.Add(float64(n))
				continue
			}
		}
		c.g.toClient.Add(float64(n))
		if c.queueBack(b, addr) {
			continue
		}
		c.flushBack() // what went before it goes first
		return copy(p, b), addr, nil
	}
}

// readOne returns the next datagram: from the batch, reading the next
// batch (after sending what the last one queued) when it is spent.
func (c *cappedConn) readOne(p []byte) ([]byte, net.Addr, error) {
	if c.rd == nil {
		n, addr, err := c.PacketConn.ReadFrom(p)
		return p[:n], addr, err
	}
	if !c.rd.buffered() {
		c.flushBack()
	}
	return c.rd.next()
}

// queueBack sends a peer's datagram to the client as ChannelData, in this
// socket's batch when it has one, and reports true; false for pion.
func (c *cappedConn) queueBack(b []byte, from net.Addr) bool {
	if c.wb == nil {
		return c.sendBack(b, from)
	}
	r, ok := c.backOf(b, from)
	if !ok {
		return false
	}
	if c.closed.Load() {
		return true // the relay is gone: what it had read goes nowhere
	}
	if r.bout == nil {
		return c.sendBack(b, from)
	}
	c.g.backHits.Add(1) // before the write: the client may read it first
	buf := c.wb.slot(r.bout)
	c.wb.commit(frame(buf, r.number, b), r.client)
	return true
}

func (c *cappedConn) flushBack() {
	if c.wb != nil && c.wb.n > 0 {
		c.wb.flush()
	}
}

// Close releases the relay and its slot under the cap.
func (c *cappedConn) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		if c.timer != nil {
			c.timer.Stop()
		}
		// The quota first: once the socket is closed, its port may be
		// bound again by a new relay.
		if c.g.q != nil && c.port != 0 {
			c.g.q.closed(c.port, c)
		}
		err = c.PacketConn.Close()
		c.g.live.Add(-1)
		c.g.m.allocations.Dec()
	})
	return err
}
