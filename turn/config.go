package turn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"
)

// Config configures the relay.
type Config struct {
	// Listen is the UDP and TCP address for TURN (3478).
	Listen string
	// HealthListen serves /healthz and /metrics.
	HealthListen string
	// TLSListen, when set, also serves TURN over TLS (turns:, 5349 or 443)
	// for networks that block UDP, with TLSCert and TLSKey (PEM files; a
	// Nomad job renders them from a variable).
	TLSListen, TLSCert, TLSKey string
	// RelayIP is the address put in relay candidates (the edge's public IP).
	RelayIP string
	// RelayBind is where relay sockets are bound (default: RelayIP).
	RelayBind string
	// MinPort and MaxPort bound the relay ports; the Nomad client reserves
	// this range (client { reserved { reserved_ports = "49160-49559" } }).
	MinPort, MaxPort uint16
	// Secret is the TURN REST shared secret (coturn's static-auth-secret).
	Secret string
	// Realm is the TURN realm.
	Realm string
	// Allowed, when not empty, are the only peer networks (the streamers').
	// It may list a private (RFC 1918) VPC range; see PeerFilter.
	Allowed []netip.Prefix
	// AllowLocalPeers lets relays reach this host's other addresses (a
	// single node whose streamers share the relay's host, as in tests);
	// the listen, relay and SelfIPs addresses stay refused.
	AllowLocalPeers bool
	// SelfIPs are more of the edge's own addresses (its public IP when
	// -relay-ip is another), refused as peers like the listen and relay IPs.
	SelfIPs []netip.Addr
	// DeniedPorts are refused as peer ports on any address: the cluster's
	// Nomad (4646-4648) and Consul (8300-8302, 8500-8503, 8600) ports. The
	// relay's own ports are added.
	DeniedPorts []int
	// Listeners is how many UDP sockets share the port (SO_REUSEPORT).
	Listeners int
	// MaxAllocations caps live relays; AllocationKbps caps each relay in each
	// direction; MaxLifetime ends a relay however often it is refreshed.
	MaxAllocations int
	AllocationKbps int
	MaxLifetime    time.Duration
	// PerUserAllocations and PerIPAllocations cap live relays per username
	// (one session's credential) and per client IP (0: no cap).
	PerUserAllocations, PerIPAllocations int
	// SpectatorAllocations caps the live relays of all of a session's
	// spectators together (the gateway names them "<session>-w<random>").
	SpectatorAllocations int
	// MaxTCPConns caps TCP (and TLS) connections; TCPIdle closes one that
	// sends nothing for that long (a relay over TCP carries media, or at
	// least refreshes).
	MaxTCPConns int
	TCPIdle     time.Duration
	// AllocationLifetime is the lifetime granted to a relay whose client
	// asks for none (browsers), between refreshes; 0 leaves pion's 10
	// minutes.
	AllocationLifetime time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:             "0.0.0.0:3478",
		HealthListen:       "127.0.0.1:3479",
		MinPort:            49160,
		MaxPort:            49559,
		Realm:              "metal",
		Listeners:          runtime.GOMAXPROCS(0),
		MaxAllocations:     400,
		PerUserAllocations: 4,
		// Up to five relay-only spectators (three relays each: one per
		// TURN URL) per session.
		SpectatorAllocations: 16,
		PerIPAllocations:     64,
		MaxTCPConns:          1000,
		TCPIdle:              2 * time.Minute,
		AllocationKbps:       20000,
		MaxLifetime:          12 * time.Hour,
		DeniedPorts:          []int{4646, 4647, 4648, 8300, 8301, 8302, 8500, 8501, 8502, 8503, 8600},
	}
}

// Validate checks the configuration once, naming the flag at fault. It never
// prints the secret.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: %w", c.Listen, err))
	}
	if _, _, err := net.SplitHostPort(c.HealthListen); err != nil {
		errs = append(errs, fmt.Errorf("-health-listen %q: %w", c.HealthListen, err))
	}
	if ip := net.ParseIP(c.RelayIP); ip == nil || ip.To4() == nil {
		errs = append(errs, fmt.Errorf("-relay-ip %q: want the edge's IPv4 address", c.RelayIP))
	}
	for _, p := range c.Allowed {
		if err := checkAllowed(p); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TLSListen != "" {
		if _, _, err := net.SplitHostPort(c.TLSListen); err != nil {
			errs = append(errs, fmt.Errorf("-tls-listen %q: %w", c.TLSListen, err))
		}
		if c.TLSCert == "" || c.TLSKey == "" {
			errs = append(errs, errors.New("-tls-listen needs -tls-cert and -tls-key"))
		}
	}
	if c.RelayBind != "" && net.ParseIP(c.RelayBind) == nil {
		errs = append(errs, fmt.Errorf("-relay-bind %q is not an IP address", c.RelayBind))
	}
	if c.MinPort == 0 || c.MaxPort < c.MinPort {
		errs = append(errs, fmt.Errorf("-min-port %d, -max-port %d: want 0 < min <= max", c.MinPort, c.MaxPort))
	} else if ports := int(c.MaxPort) - int(c.MinPort) + 1; ports < c.MaxAllocations {
		// Every relay holds one port of the range.
		errs = append(errs, fmt.Errorf("-max-allocations %d needs %d relay ports; -min-port %d to -max-port %d gives %d: widen the range (and the Nomad client's reserved ports) or lower the cap",
			c.MaxAllocations, c.MaxAllocations, c.MinPort, c.MaxPort, ports))
	}
	if c.PerUserAllocations < 0 || c.SpectatorAllocations < 0 || c.PerIPAllocations < 0 || c.MaxTCPConns < 0 || c.TCPIdle < 0 {
		errs = append(errs, errors.New("-per-user-allocations, -spectator-allocations, -per-ip-allocations, -max-tcp-conns, -tcp-idle must not be negative"))
	}
	if len(c.Secret) < 16 {
		errs = append(errs, errors.New("-secret (METAL_SECRET): want at least 16 characters"))
	}
	if c.AllocationLifetime != 0 && (c.AllocationLifetime < 5*time.Second || c.AllocationLifetime > time.Hour) {
		errs = append(errs, fmt.Errorf("-allocation-lifetime %v: want 0 (10 minutes) or 5s to 1h", c.AllocationLifetime))
	}
	if c.Listeners < 1 || c.MaxAllocations < 1 || c.AllocationKbps < 0 || c.MaxLifetime < 0 {
		errs = append(errs, errors.New("-listeners, -max-allocations must be positive; -allocation-kbps, -max-lifetime not negative"))
	}
	return errors.Join(errs...)
}
