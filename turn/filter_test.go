package turn

import (
	"net"
	"net/netip"
	"testing"
)

func TestPeerFilter(t *testing.T) {
	open := PeerFilter{}
	// 100.64.0.0/16 cannot pass Config.Validate; listed here anyway, CGNAT
	// stays refused.
	only := PeerFilter{Allowed: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("100.64.0.0/16")}}
	tests := []struct {
		ip         string
		open, only bool
	}{
		{"203.0.113.7", true, false},
		{"198.18.0.9", true, true},
		{"127.0.0.1", false, false},
		{"127.8.9.10", false, false},
		{"10.0.0.1", false, false},
		{"10.1.2.3", false, true}, // a private range listed explicitly (the VPC) is admitted
		{"172.16.5.4", false, false},
		{"192.168.1.1", false, false},
		{"100.64.0.1", false, false},
		{"169.254.169.254", false, false},
		{"0.0.0.0", false, false},
		{"224.0.0.251", false, false},
		{"255.255.255.255", false, false},
		{"::1", false, false},
		{"::", false, false},
		{"::ffff:127.0.0.1", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"::ffff:10.0.0.1", false, false},
		{"::127.0.0.1", false, false},        // IPv4-compatible
		{"::a00:1", false, false},            // ::10.0.0.1
		{"64:ff9b::a9fe:a9fe", false, false}, // NAT64 169.254.169.254
		{"2002:7f00:1::", false, false},      // 6to4 of 127.0.0.1
		{"fd00::1", false, false},
		{"fe80::1", false, false},
		{"ff02::1", false, false},
		{"2001:db8::1", true, false},
		{"::ffff:198.18.0.9", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := net.ParseIP(tt.ip)
			if ip == nil {
				t.Fatalf("bad test ip %s", tt.ip)
			}
			if got := open.Allow(ip); got != tt.open {
				t.Errorf("open filter Allow(%s) = %v, want %v", tt.ip, got, tt.open)
			}
			if got := only.Allow(ip); got != tt.only {
				t.Errorf("allow-list filter Allow(%s) = %v, want %v", tt.ip, got, tt.only)
			}
		})
	}
	if open.Allow(net.IP{1, 2, 3}) {
		t.Error("malformed IP allowed")
	}
}

// TestPeerFilterRefusesItself: the edge's own addresses and every other
// address of this host are refused even when an allow-list covers them
// (unless AllowLocal, for a single-node setup); an allow-list admits a
// private VPC range but never opens loopback or link-local.
func TestPeerFilterRefusesItself(t *testing.T) {
	self := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.1.0.5")}
	local := []netip.Addr{netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("198.51.100.3")}
	open := PeerFilter{Self: self, Local: local}
	allowed := []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"),
	}
	vpc := PeerFilter{Self: self, Local: local, Allowed: allowed}
	single := PeerFilter{Self: self, Local: local, Allowed: allowed, AllowLocal: true}
	for _, tt := range []struct {
		ip                string
		open, vpc, single bool
	}{
		{"203.0.113.10", false, false, false},        // relay / public IP
		{"::ffff:203.0.113.10", false, false, false}, // the same, mapped
		{"10.1.0.5", false, false, false},            // listen IP
		{"10.1.0.7", false, false, true},             // this node's VPC address
		{"198.51.100.3", false, false, false},        // another interface, not listed
		{"10.1.9.9", false, true, true},              // another node of the VPC
		{"10.2.0.1", false, false, false},            // private, not listed
		{"127.0.0.1", false, false, false},           // loopback, even listed
		{"169.254.169.254", false, false, false},     // metadata, even listed
		{"203.0.113.77", true, true, true},
	} {
		ip := net.ParseIP(tt.ip)
		if got := open.Allow(ip); got != tt.open {
			t.Errorf("no allow-list: Allow(%s) = %v, want %v", tt.ip, got, tt.open)
		}
		if got := vpc.Allow(ip); got != tt.vpc {
			t.Errorf("VPC allow-list: Allow(%s) = %v, want %v", tt.ip, got, tt.vpc)
		}
		if got := single.Allow(ip); got != tt.single {
			t.Errorf("VPC allow-list, local allowed: Allow(%s) = %v, want %v", tt.ip, got, tt.single)
		}
	}
}

func FuzzPeerFilter(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add([]byte(net.ParseIP("::ffff:10.0.0.1")))
	f.Fuzz(func(t *testing.T, b []byte) {
		ip := net.IP(b)
		if !(PeerFilter{}).Allow(ip) {
			return
		}
		a, _ := netip.AddrFromSlice(b)
		a = a.Unmap()
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			t.Fatalf("allowed %v", a)
		}
	})
}
