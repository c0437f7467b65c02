package turn

import (
	"net"
	"sync"

	"golang.org/x/net/ipv4"
)

// The relay's datagrams move in batches: one recvmmsg reads as many as a
// socket has queued (up to batchSize), and what the fast paths relay from
// that batch leaves in one sendmmsg per destination socket, flushed before
// the reader blocks for the next batch and before a datagram is handed to
// pion (so nothing waits behind a read, and order is kept). Under load a
// stream's datagrams queue, and the system call per datagram, each way,
// was the cost; an idle socket's batch is one datagram, sent at once.

const batchSize = 32

// batchReader reads datagrams in batches from one socket.
type batchReader struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	n, i int
}

func newBatchReader(c net.PacketConn) *batchReader {
	r := &batchReader{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batchSize)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, inboundMTU)}
	}
	return r
}

// buffered reports whether a datagram read is waiting.
func (r *batchReader) buffered() bool { return r.i < r.n }

// next returns the next datagram, valid until the next batch is read,
// reading one when none is waiting.
func (r *batchReader) next() ([]byte, net.Addr, error) {
	for r.i >= r.n {
		n, err := r.pc.ReadBatch(r.msgs, 0)
		if err != nil {
			return nil, nil, err
		}
		r.n, r.i = n, 0 // n is 0 only if the kernel read nothing: read again
	}
	m := &r.msgs[r.i]
	r.i++
	return m.Buffers[0][:m.N], m.Addr, nil
}

// batchConn is a listener socket read in batches and handed to pion, which
// reads one datagram at a time.
// Its reader's ipv4.PacketConn also writes ChannelData to clients in
// batches (fastpath.go).
type batchConn struct {
	net.PacketConn
	r *batchReader
}

func newBatchConn(c net.PacketConn) *batchConn {
	return &batchConn{PacketConn: c, r: newBatchReader(c)}
}

// ReadFrom returns the next queued datagram, reading a batch when none is.
func (b *batchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	d, addr, err := b.r.next()
	if err != nil {
		return 0, nil, err
	}
	return copy(p, d), addr, nil
}

// writeBatch gathers datagrams for sendmmsg: consecutive ones for the same
// socket leave in one call. One goroutine owns it.
type writeBatch struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	bufs [][]byte
	n    int
}

func newWriteBatch() *writeBatch {
	w := &writeBatch{msgs: make([]ipv4.Message, batchSize), bufs: make([][]byte, batchSize)}
	for i := range w.msgs {
		w.bufs[i] = make([]byte, 4+inboundMTU)
		w.msgs[i].Buffers = make([][]byte, 1)
	}
	return w
}

// slot returns the buffer for the next datagram to pc (4+inboundMTU bytes),
// sending what is gathered for another socket first.
func (w *writeBatch) slot(pc *ipv4.PacketConn) []byte {
	if w.n > 0 && w.pc != pc {
		w.flush()
	}
	w.pc = pc
	return w.bufs[w.n]
}

// commit adds the slot's first n bytes, to addr, and sends the batch when
// it is full.
func (w *writeBatch) commit(n int, addr net.Addr) {
	w.msgs[w.n].Buffers[0] = w.bufs[w.n][:n]
	w.msgs[w.n].Addr = addr
	w.n++
	if w.n == len(w.msgs) {
		w.flush()
	}
}

// flush sends what is gathered. A datagram the kernel refuses (an ICMP
// error queued on the socket, a full buffer) is dropped, as a single
// WriteTo's would be, and the rest still go.
func (w *writeBatch) flush() {
	for off := 0; off < w.n; {
		k, err := w.pc.WriteBatch(w.msgs[off:w.n], 0)
		if err != nil || k <= 0 {
			k = 1
		}
		off += k
	}
	for i := range w.n {
		w.msgs[i].Addr = nil
	}
	w.n = 0
}

// batchWriter is a relay socket's sendmmsg side, made on first use by
// whichever listener's fast path sends to a peer first.
type batchWriter struct {
	once sync.Once
	pc   *ipv4.PacketConn
}

func (b *batchWriter) of(c net.PacketConn) *ipv4.PacketConn {
	b.once.Do(func() {
		if _, ok := c.(*net.UDPConn); ok {
			b.pc = ipv4.NewPacketConn(c)
		}
	})
	return b.pc
}
