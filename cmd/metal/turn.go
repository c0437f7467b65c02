package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"

	"github.com/metal-stream/metal/internal/flagenv"
	"github.com/metal-stream/metal/turn"
)

func runTURN(ctx context.Context, log *slog.Logger, args []string) error {
	cfg := turn.DefaultConfig()
	fs := flag.NewFlagSet("turn", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "UDP and TCP address for TURN")
	fs.StringVar(&cfg.HealthListen, "health-listen", cfg.HealthListen, "address for /healthz and /metrics")
	fs.StringVar(&cfg.TLSListen, "tls-listen", "", "also serve TURN over TLS (turns:) here, e.g. 0.0.0.0:5349 or :443, for networks that block UDP")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "certificate (PEM) of -tls-listen; its name is what the turns: URL names")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key (PEM) of -tls-cert")
	fs.StringVar(&cfg.RelayIP, "relay-ip", os.Getenv("NOMAD_META_public_ip"), "public IPv4 of this edge, put in relay candidates (default: Nomad node meta public_ip)")
	fs.StringVar(&cfg.RelayBind, "relay-bind", cfg.RelayBind, "address relay sockets bind to (default: -relay-ip)")
	minPort := fs.Uint("min-port", uint(cfg.MinPort), "lowest relay port (reserve the range on the Nomad client)")
	maxPort := fs.Uint("max-port", uint(cfg.MaxPort), "highest relay port")
	fs.StringVar(&cfg.Secret, "secret", "", "TURN REST shared secret (use METAL_SECRET or a Nomad variable; never logged)")
	allowed := fs.String("allow", "", "comma-separated CIDRs peers must be in (the streamers' networks); empty: any public address")
	fs.IntVar(&cfg.Listeners, "listeners", cfg.Listeners, "UDP sockets sharing the port (SO_REUSEPORT), one per core")
	fs.IntVar(&cfg.MaxAllocations, "max-allocations", cfg.MaxAllocations, "live relays at most (each holds a port of -min-port..-max-port, so the range must be at least this wide)")
	fs.IntVar(&cfg.PerUserAllocations, "per-user-allocations", cfg.PerUserAllocations, "live relays per TURN username (one session's credential); 0: no cap")
	fs.IntVar(&cfg.SpectatorAllocations, "spectator-allocations", cfg.SpectatorAllocations, "live relays of all of a session's spectators together (share links); 0: no cap")
	fs.IntVar(&cfg.PerIPAllocations, "per-ip-allocations", cfg.PerIPAllocations, "live relays per client IP; 0: no cap")
	fs.IntVar(&cfg.MaxTCPConns, "max-tcp-conns", cfg.MaxTCPConns, "TCP and TLS connections at most; more are closed at once")
	fs.DurationVar(&cfg.TCPIdle, "tcp-idle", cfg.TCPIdle, "close a TCP or TLS connection that sends nothing for this long")
	fs.IntVar(&cfg.AllocationKbps, "allocation-kbps", cfg.AllocationKbps, "bandwidth cap per relay and direction, kbit/s (0: none)")
	fs.DurationVar(&cfg.MaxLifetime, "max-lifetime", cfg.MaxLifetime, "a relay ends after this long however often it is refreshed; a credential that opened it keeps refreshing it until then, expired or not")
	fs.DurationVar(&cfg.AllocationLifetime, "allocation-lifetime", cfg.AllocationLifetime, "lifetime of a relay between refreshes when the client asks for none (0: pion's 10 minutes)")
	fs.BoolVar(&cfg.AllowLocalPeers, "allow-local-peers", false, "let relays reach this host's other addresses (a single node whose streamers share the relay's host); the listen, relay and -self-ip addresses stay refused")
	selfIPs := fs.String("self-ip", "", "comma-separated addresses of this edge besides -listen, -relay-ip and -relay-bind (its public IP behind NAT), refused as peers")
	denyPorts := fs.String("deny-ports", "4646,4647,4648,8300,8301,8302,8500,8501,8502,8503,8600", "comma-separated peer ports refused on any address (the cluster's Nomad and Consul ports); the relay's own are added")
	flagenv.Usage(fs, "metal turn [flags]")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	if *minPort > 65535 || *maxPort > 65535 {
		return fmt.Errorf("-min-port and -max-port must be ports")
	}
	cfg.MinPort, cfg.MaxPort = uint16(*minPort), uint16(*maxPort)
	for _, c := range splitList(*allowed) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("-allow %q: %w", c, err)
		}
		cfg.Allowed = append(cfg.Allowed, p)
	}
	for _, a := range splitList(*selfIPs) {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("-self-ip %q: %w", a, err)
		}
		cfg.SelfIPs = append(cfg.SelfIPs, ip)
	}
	cfg.DeniedPorts = nil
	for _, p := range splitList(*denyPorts) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("-deny-ports %q: want ports", p)
		}
		cfg.DeniedPorts = append(cfg.DeniedPorts, n)
	}
	s, err := turn.New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Run(ctx)
}
