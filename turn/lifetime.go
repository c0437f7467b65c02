package turn

import (
	"encoding/binary"
	"time"

	"github.com/pion/stun/v2"
)

// capLifetime sets the lifetime of a relay whose Allocate or Refresh
// request asks for none (browsers ask for none; pion then grants 10
// minutes): a LIFETIME attribute of max is appended after the request's
// last attribute. Attributes after MESSAGE-INTEGRITY are outside what it
// signs, so the request still authenticates. A request that names a
// lifetime is left as it is (that attribute is signed; pion grants up to an
// hour). A shorter lifetime frees a vanished client's relay port sooner;
// clients refresh at half a lifetime when it is under two minutes. b[:n] is
// the datagram; the new length is returned (b must have 8 bytes to spare).
func capLifetime(b []byte, n int, max time.Duration) int {
	if max <= 0 || n+8 > len(b) || !stun.IsMessage(b[:n]) {
		return n
	}
	msg := &stun.Message{Raw: b[:n]}
	if err := msg.Decode(); err != nil || msg.Type.Class != stun.ClassRequest ||
		(msg.Type.Method != stun.MethodAllocate && msg.Type.Method != stun.MethodRefresh) ||
		msg.Contains(stun.AttrLifetime) {
		return n
	}
	binary.BigEndian.PutUint16(b[n:], uint16(stun.AttrLifetime))
	binary.BigEndian.PutUint16(b[n+2:], 4)
	binary.BigEndian.PutUint32(b[n+4:], uint32(max/time.Second))
	binary.BigEndian.PutUint16(b[2:4], uint16(n+8-20)) // the header's message length
	return n + 8
}
