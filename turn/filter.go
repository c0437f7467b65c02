package turn

import (
	"fmt"
	"net"
	"net/netip"
)

// private are the internal ranges an explicit allow-list may admit (a cloud
// VPC's streamer network): RFC 1918 and its IPv6 counterpart, unique local
// addresses (RFC 4193). Every other denied range (CGNAT, loopback,
// link-local, ...) stays denied whatever the allow-list says.
var private = mustPrefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

// denied are the networks a relay must never reach.
var denied = mustPrefixes(
	// IPv4
	"0.0.0.0/8",      // this network, unspecified
	"10.0.0.0/8",     // RFC 1918
	"100.64.0.0/10",  // CGNAT (RFC 6598)
	"127.0.0.0/8",    // loopback
	"169.254.0.0/16", // link-local, cloud metadata 169.254.169.254
	"172.16.0.0/12",  // RFC 1918
	"192.0.0.0/24",   // IETF protocol assignments
	"192.168.0.0/16", // RFC 1918
	"224.0.0.0/4",    // multicast
	"240.0.0.0/4",    // reserved, broadcast
	// IPv6
	"::/128",    // unspecified
	"::1/128",   // loopback
	"fc00::/7",  // unique local (ULA)
	"fe80::/10", // link-local
	"ff00::/8",  // multicast
	"100::/64",  // discard-only
)

func mustPrefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// PeerFilter decides whether a relay may send to a peer address. In order:
//  1. the edge's own addresses (Self: listen, relay and public IPs) are
//     refused: no TURN inside TURN; so is every other address of this
//     host (Local: its interfaces), unless AllowLocal (a single-node
//     setup whose streamers share the relay's host);
//  2. an address in Allowed is admitted, even an RFC 1918 or ULA one (a
//     VPC's streamers on other nodes), but never CGNAT, loopback,
//     link-local (cloud metadata), multicast or reserved;
//  3. every denied range is refused;
//  4. anything else is admitted when Allowed is empty.
//
// Ports are not the filter's: TURN permissions are per IP address. The
// cluster's Nomad and Consul ports are refused on any address when data is
// relayed (DeniedPorts, relay.go).
type PeerFilter struct {
	// Allowed, when not empty, are the only networks a relay may reach (the
	// streamers' addresses).
	Allowed []netip.Prefix
	// Self are the edge's own addresses, refused even when allowed.
	Self []netip.Addr
	// Local are this host's interface addresses, refused unless
	// AllowLocal.
	Local      []netip.Addr
	AllowLocal bool
}

// Allow reports whether ip is a peer a client may relay to.
func (f PeerFilter) Allow(ip net.IP) bool {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = embeddedIPv4(addr)
	for _, a := range f.Self {
		if embeddedIPv4(a) == addr {
			return false
		}
	}
	if !f.AllowLocal {
		for _, a := range f.Local {
			if embeddedIPv4(a) == addr {
				return false
			}
		}
	}
	inDenied := false
	for _, p := range denied {
		if p.Contains(addr) {
			inDenied = true
			break
		}
	}
	for _, p := range f.Allowed {
		if p.Contains(addr) {
			return !inDenied || isPrivate(addr)
		}
	}
	if inDenied {
		return false
	}
	return len(f.Allowed) == 0
}

func isPrivate(a netip.Addr) bool {
	for _, p := range private {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// embeddedIPv4 returns the IPv4 address inside the IPv6 forms that carry
// one, so that [::ffff:127.0.0.1] is judged as 127.0.0.1: IPv4-mapped
// (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and 6to4
// (2002::/16).
func embeddedIPv4(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	if a.Is4In6() {
		return a.Unmap()
	}
	b := a.As16()
	isZero := func(bs []byte) bool {
		for _, x := range bs {
			if x != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case isZero(b[:12]) && !isZero(b[12:]) && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}) // IPv4-compatible
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}) // NAT64
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}) // 6to4
	}
	return a
}

// checkAllowed refuses an allow-list entry that spans internal ranges it
// cannot mean: one overlapping a denied range must lie inside one private
// range (10.1.0.0/16 is a VPC; 0.0.0.0/0 or 100.64.0.0/10 is a mistake
// that would otherwise read as "every private network").
func checkAllowed(p netip.Prefix) error {
	p = p.Masked()
	for _, d := range denied {
		if !d.Overlaps(p) {
			continue
		}
		for _, v := range private {
			if v.Bits() <= p.Bits() && v.Contains(p.Addr()) {
				return nil
			}
		}
		return fmt.Errorf("-allow %s overlaps the internal range %s: list public networks and RFC 1918 or ULA VPC ranges (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7) apart", p, d)
	}
	return nil
}
