package turn

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/randutil"
	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3/stdnet"
	"github.com/pion/turn/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/metal-stream/metal/internal/pionlog"
)

// Server is one edge's TURN relay.
type Server struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	filter  PeerFilter
	udp     []net.PacketConn
	tcp     net.Listener
	tls     net.Listener // nil without TLSListen
	health  net.Listener
	gen     *cappedGenerator
	fast    *channels // the ChannelData fast path of the UDP listeners
	turnSrv *turn.Server
}

// New validates cfg.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, log: log.With("component", "turn"), m: newMetrics(), filter: PeerFilter{Allowed: cfg.Allowed}}, nil
}

// selfAndLocal fills the filter with the edge's own addresses (listen,
// relay, bind, SelfIPs) and this host's interface addresses, and returns
// the ports refused to peers (DeniedPorts and the relay's own).
func (s *Server) selfAndLocal() *portSet {
	var self []netip.Addr
	add := func(host string) {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			self = append(self, a)
		}
	}
	listen, _ := netip.ParseAddrPort(s.Addr().String())
	add(listen.Addr().String())
	add(s.cfg.RelayIP)
	add(s.cfg.RelayBind)
	self = append(self, s.cfg.SelfIPs...)
	var local []netip.Addr
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					local = append(local, ip.Unmap())
				}
			}
		}
	}
	s.filter.Self, s.filter.Local, s.filter.AllowLocal = self, local, s.cfg.AllowLocalPeers
	ports := &portSet{}
	for _, p := range s.cfg.DeniedPorts {
		ports.add(p)
	}
	ports.add(int(listen.Port()))
	for _, a := range []net.Addr{s.TLSAddr(), s.HealthAddr()} {
		if a == nil {
			continue
		}
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ports.add(int(ap.Port()))
		}
	}
	return ports
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Listen binds the UDP sockets (several on one port, SO_REUSEPORT, so the
// kernel spreads clients over cores), the TCP listener and the health port.
func (s *Server) Listen() error {
	lc := net.ListenConfig{Control: reusePort}
	addr := s.cfg.Listen
	for i := 0; i < s.cfg.Listeners; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("turn udp %s: %w", addr, err)
		}
		s.udp = append(s.udp, pc)
		addr = pc.LocalAddr().String() // a :0 port is fixed by the first socket
	}
	tcp, err := net.Listen("tcp4", addr)
	if err != nil {
		s.closeListeners()
		return fmt.Errorf("turn tcp %s: %w", addr, err)
	}
	s.tcp = tcp
	if s.cfg.TLSListen != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("turn tls certificate: %w", err)
		}
		l, err := net.Listen("tcp4", s.cfg.TLSListen)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("turn tls %s: %w", s.cfg.TLSListen, err)
		}
		s.tls = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	h, err := net.Listen("tcp", s.cfg.HealthListen)
	if err != nil {
		s.closeListeners()
		return fmt.Errorf("turn health %s: %w", s.cfg.HealthListen, err)
	}
	s.health = h
	return nil
}

func (s *Server) closeListeners() {
	for _, c := range s.udp {
		c.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	if s.tls != nil {
		s.tls.Close()
	}
	if s.health != nil {
		s.health.Close()
	}
}

// Addr is the TURN address (UDP and TCP share it).
func (s *Server) Addr() *net.UDPAddr { return s.udp[0].LocalAddr().(*net.UDPAddr) }

// TLSAddr is the turns: address, nil without TLSListen.
func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}
	return s.tls.Addr()
}

// HealthAddr is the /healthz and /metrics address.
func (s *Server) HealthAddr() net.Addr { return s.health.Addr() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.udp == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	nw, err := stdnet.NewNet()
	if err != nil {
		return err
	}
	bind := s.cfg.RelayBind
	if bind == "" {
		bind = s.cfg.RelayIP
	}
	deniedPorts := s.selfAndLocal()
	s.gen = &cappedGenerator{
		inner: &turn.RelayAddressGeneratorPortRange{
			RelayAddress: net.ParseIP(s.cfg.RelayIP), Address: bind,
			MinPort: s.cfg.MinPort, MaxPort: s.cfg.MaxPort, MaxRetries: 20,
			Rand: randutil.NewMathRandomGenerator(), Net: nw,
		},
		max: int64(s.cfg.MaxAllocations), bytesPerS: s.cfg.AllocationKbps * 1000 / 8,
		lifetime: s.cfg.MaxLifetime, m: s.m, ports: deniedPorts,
		q:      newQuotas(s.cfg.PerUserAllocations, s.cfg.SpectatorAllocations, s.cfg.PerIPAllocations, &held{lifetime: s.cfg.MaxLifetime}),
		toPeer: s.m.relayed.WithLabelValues("to_peer"), toClient: s.m.relayed.WithLabelValues("to_client"),
	}
	// pion logs refused permissions and bad requests at info, one line
	// each: at most 10 lines a second, the rest counted.
	logs := pionlog.Limited(s.log, 10, 20)
	rest := turn.LongTermTURNRESTAuthHandler(s.cfg.Secret, logs.NewLogger("auth"))
	v := &verdicts{realm: s.cfg.Realm}
	outlive := s.gen.q.held
	auth := func(username, realm string, src net.Addr) ([]byte, bool) {
		now := time.Now()
		if key, ok := rest(username, realm, src); ok {
			return key, true
		}
		// Expired, but it opened this client's relay while valid (held.go):
		// the key is still the secret's for that username, so a forged
		// request fails MESSAGE-INTEGRITY all the same.
		if outlive.still(username, src, now) {
			s.m.outlived.Inc()
			return turn.GenerateAuthKey(username, realm, restPassword(s.cfg.Secret, username)), true
		}
		s.m.authFailed.Inc()
		v.set(src, stun.CodeUnauthorized)
		return nil, false
	}
	permit := func(client net.Addr, peer net.IP) bool {
		if s.filter.Allow(peer) {
			s.gen.q.permitted(client, peer)
			return true
		}
		s.m.denied.Inc()
		v.set(client, stun.CodeForbidden)
		return false
	}
	var pcs []turn.PacketConnConfig
	s.fast = newChannels(s.gen.q, channelBindTimeout, s.filter.Allow)
	fast := s.fast
	for _, c := range s.udp {
		pcs = append(pcs, turn.PacketConnConfig{PacketConn: &fixingPacketConn{PacketConn: newBatchConn(c), v: v, secret: s.cfg.Secret, m: s.m, lifetime: s.cfg.AllocationLifetime, q: s.gen.q, ch: fast}, RelayAddressGenerator: s.gen, PermissionHandler: permit})
	}
	// TCP and TLS share one connection cap.
	streams := &fixingListener{Listener: s.tcp, v: v, secret: s.cfg.Secret, m: s.m, q: s.gen.q,
		idle: s.cfg.TCPIdle, max: int64(s.cfg.MaxTCPConns), live: &atomic.Int64{}, perIP: &ipCount{}}
	lcs := []turn.ListenerConfig{{Listener: streams, RelayAddressGenerator: s.gen, PermissionHandler: permit}}
	if s.tls != nil {
		tl := *streams
		tl.Listener = s.tls
		lcs = append(lcs, turn.ListenerConfig{Listener: &tl, RelayAddressGenerator: s.gen, PermissionHandler: permit})
	}
	s.turnSrv, err = turn.NewServer(turn.ServerConfig{
		Realm:              s.cfg.Realm,
		ChannelBindTimeout: channelBindTimeout, // the fast path's too
		AuthHandler:        auth,
		LoggerFactory:      logs,
		PacketConnConfigs:  pcs,
		ListenerConfigs:    lcs,
	})
	if err != nil {
		s.closeListeners()
		return fmt.Errorf("turn server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"ok","allocations":%d}`+"\n", s.gen.live.Load())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	// /probe is what a player's page times to measure its RTT to this edge.
	mux.HandleFunc("GET /probe", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Timing-Allow-Origin", "*")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.health) }()
	s.log.Info("turn relay serving", "listen", s.Addr().String(), "relay_ip", s.cfg.RelayIP,
		"relay_ports", strconv.Itoa(int(s.cfg.MinPort))+"-"+strconv.Itoa(int(s.cfg.MaxPort)), "listeners", len(s.udp))
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shut)
	cerr := s.turnSrv.Close()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return cerr
}

// restPassword is the TURN REST password of a username:
// base64(HMAC-SHA1(secret, username)).
func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Credentials returns TURN REST credentials for session, valid for ttl:
// username "expiry:session", password base64(HMAC-SHA1(secret, username)),
// as coturn's use-auth-secret expects.
func Credentials(secret, session string, ttl time.Duration) (username, password string, err error) {
	return turn.GenerateLongTermTURNRESTCredentials(secret, session, ttl)
}
