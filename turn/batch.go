package turn

import (
	"net"

	"golang.org/x/net/ipv4"
)

// batchConn reads datagrams in batches (recvmmsg: one system call for as
// many as are queued, up to batchSize) and hands them to pion, which reads
// one at a time. On the relay's hot path, client → peer, a stream's
// datagrams queue on one socket, and the call per datagram was the cost.
type batchConn struct {
	net.PacketConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	n, i int
}

const batchSize = 32

func newBatchConn(c net.PacketConn) *batchConn {
	b := &batchConn{PacketConn: c, pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batchSize)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{make([]byte, 1600)}
	}
	return b
}

// ReadFrom returns the next queued datagram, reading a batch when none is.
func (b *batchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if b.i >= b.n {
		n, err := b.pc.ReadBatch(b.msgs, 0)
		if err != nil {
			return 0, nil, err
		}
		b.n, b.i = n, 0
	}
	m := &b.msgs[b.i]
	b.i++
	return copy(p, m.Buffers[0][:m.N]), m.Addr, nil
}
