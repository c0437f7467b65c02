package streamer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/metal-stream/metal/internal/pionlog"
	"github.com/metal-stream/metal/internal/player"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/gst"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

// Server is one streamer: a display, its pipelines, and the WHEP endpoint.
type Server struct {
	cfg     Config
	log     *slog.Logger
	signer  *token.Signer
	metrics *metrics
	probe   EncoderProbe

	httpLn   net.Listener
	udpMux   *ice.MultiUDPMuxDefault
	settings webrtc.SettingEngine

	media     *Media
	input     Injector
	display   string
	branch    branch            // the video encoder branch running (after Run has chosen it)
	skipped   map[string]string // encoders not chosen, and why
	cursor    []byte            // the latest cursor message
	cursorSeq uint64            // its number
	pointer   []byte            // the latest pointer message
	// showPointer is true when the capture draws the pointer (no XFIXES,
	// or -remote-cursor=false) instead of the player.
	showPointer bool
	ready       atomic.Bool
	// width and height are the screen's size now (guarded by mu); it
	// follows the owner's window unless the resolution is fixed (resize.go).
	width, height int
	resizeReq     chan [2]int
	clip          *sessionClipboard // nil without xclip or XFIXES
	pads          padSink           // nil with -gamepad off
	padPeer       string            // the peer whose pad message came last (guarded by mu)
	xvfbPID       atomic.Int64      // the Xvfb this streamer started (benchmarks count its CPU)

	mu       sync.Mutex
	peers    map[string]*peer
	pending  int              // WHEP offers being answered: they hold a peer slot
	spent    map[string]int64 // single-use token IDs: expiry (unix)
	idleFrom time.Time

	// OnEncoded, when set before Run, is called with each video frame's
	// capture-to-encoded latency (benchmarks).
	OnEncoded func(latency time.Duration)

	drawnMu sync.Mutex
	drawn   [stampRing]time.Time // when the demo's stamp with counter c was on screen, at c
	stamps  atomic.Uint64        // stamps drawn (benchmarks check the rate)
}

func (s *Server) frameDrawn(n uint32) {
	s.drawnMu.Lock()
	s.drawn[n%stampRing] = time.Now()
	s.drawnMu.Unlock()
	s.stamps.Add(1)
}

// StampDrawnAt is when the demo drew the stamp with counter c (stamp.go),
// for glass-to-glass; zero if none was.
func (s *Server) StampDrawnAt(c uint16) time.Time {
	s.drawnMu.Lock()
	defer s.drawnMu.Unlock()
	return s.drawn[uint32(c)%stampRing]
}

// New validates cfg and builds a streamer; Listen binds its ports, Run
// starts the display and pipelines and serves.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	signer, err := token.NewSigner(cfg.TokenKey)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:      cfg,
		log:      log.With("component", "streamer", "session", cfg.SessionID),
		signer:   signer,
		metrics:  newMetrics(),
		probe:    gstProbe{},
		peers:    map[string]*peer{},
		idleFrom: time.Now(),
		width:    cfg.Width, height: cfg.Height,
		resizeReq: make(chan [2]int, 1),
	}, nil
}

// Listen binds the HTTP listener and the one UDP port for ICE.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("streamer listen %s: %w", s.cfg.Listen, err)
	}
	opts := []ice.UDPMuxFromPortOption{
		ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4),
		ice.UDPMuxFromPortWithLogger(pionlog.Factory{Log: s.log}.NewLogger("udpmux")),
	}
	if s.cfg.Loopback {
		opts = append(opts, ice.UDPMuxFromPortWithLoopback())
	}
	if len(s.cfg.ICEInterfaces) > 0 {
		opts = append(opts, ice.UDPMuxFromPortWithInterfaceFilter(func(name string) bool {
			return slices.Contains(s.cfg.ICEInterfaces, name)
		}))
	}
	mux, err := ice.NewMultiUDPMuxFromPort(s.cfg.ICEPort, opts...)
	if err != nil {
		ln.Close()
		return fmt.Errorf("ice udp port %d: %w", s.cfg.ICEPort, err)
	}
	se := webrtc.SettingEngine{LoggerFactory: pionlog.Factory{Log: s.log}}
	se.SetICEUDPMux(mux)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(s.cfg.Loopback)
	if len(s.cfg.ICEInterfaces) > 0 {
		se.SetInterfaceFilter(func(name string) bool { return slices.Contains(s.cfg.ICEInterfaces, name) })
	}
	if len(s.cfg.PublicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: s.cfg.PublicIPs, AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			ln.Close()
			mux.Close()
			return fmt.Errorf("-public-ip: %w", err)
		}
	}
	s.httpLn, s.udpMux, s.settings = ln, mux, se
	return nil
}

// Addr is the HTTP address.
func (s *Server) Addr() net.Addr { return s.httpLn.Addr() }

// URL is the streamer's HTTP base URL.
func (s *Server) URL() string { return "http://" + s.httpLn.Addr().String() }

// Encoder is the video encoder in use (after Run has started).
func (s *Server) Encoder() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.branch.Encoder
}

// Display is the X display in use (after Run has started).
func (s *Server) Display() string { return s.display }

// OwnerURL is a player link holding an owner token for this session, valid
// for ttl: what `metal streamer` prints for a laptop user.
func (s *Server) OwnerURL(ttl time.Duration) (string, error) {
	tok, err := s.signer.Sign(s.cfg.SessionID, token.RoleOwner, ttl, time.Now())
	if err != nil {
		return "", err
	}
	return s.URL() + "/#token=" + tok, nil
}

// Run starts the display, audio, and pipelines, then serves until ctx ends
// or the idle timeout passes (then it returns nil, so the process exits 0).
func (s *Server) Run(ctx context.Context) error {
	// Whatever Run started ends when it returns, an early error included.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.httpLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	defer s.udpMux.Close()
	var cleanup []func()
	defer func() {
		cancel() // goroutines Run started stop before what they use is torn down
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	// Display.
	s.display = s.cfg.Display
	if s.display == "" {
		x, err := startXvfb(ctx, s.cfg.Width, s.cfg.Height)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, x.stop)
		s.display = x.display
		s.xvfbPID.Store(int64(x.cmd.Process.Pid))
		s.log.Info("started Xvfb", "display", s.display, "size", fmt.Sprintf("%dx%d", s.cfg.Width, s.cfg.Height))
	}
	inj, err := x11.Open(s.display)
	if err != nil {
		return err
	}
	cleanup = append(cleanup, inj.Close)
	s.input = inj
	if s.pads, err = newPadSink(s.cfg.Gamepad, s.cfg.SessionID, inj, s.log); err != nil {
		return err
	}
	if s.pads != nil {
		cleanup = append(cleanup, s.pads.Close)
		s.log.Info("gamepads", "mode", s.pads.Mode())
	}

	// The clipboard, both ways (clipboard.go).
	if _, err := exec.LookPath("xclip"); err != nil {
		s.log.Warn("no clipboard: xclip is not installed (apt-get install xclip)")
	} else {
		s.clip = &sessionClipboard{display: s.display}
		cctx, ccancel := context.WithCancel(ctx)
		wait, err := x11.WatchSelections(cctx, s.display, s.selectionChanged)
		if err != nil {
			ccancel()
			s.clip = nil
			s.log.Warn("no clipboard", "err", err)
		} else {
			cleanup = append(cleanup, func() { ccancel(); wait() })
		}
	}

	// Encoder and video.
	vp := videoParams{Width: s.cfg.Width, Height: s.cfg.Height, FPS: s.cfg.FPS, Kbps: s.cfg.StartKbps, Profile: s.cfg.H264Profile}
	b, skipped, err := ChooseEncoder(s.cfg.Encoder, vp, s.probe, s.log)
	s.mu.Lock()
	s.branch, s.skipped = b, skipped
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.metrics.encoder.WithLabelValues(b.Encoder).Set(1)
	s.log.Info("video encoder", "encoder", b.Encoder, "codec", b.Codec(), "fmtp", b.Fmtp(),
		"resolution", fmt.Sprintf("%dx%d", s.cfg.Width, s.cfg.Height), "fps", s.cfg.FPS, "not_chosen", skipped)
	if s.media, err = newMedia(b, s.cfg, s.metrics); err != nil {
		return err
	}
	s.metrics.targetBitrate.Set(float64(s.cfg.StartKbps * 1000))
	// The cursor goes to the players; the capture draws it only where it
	// cannot (no XFIXES) or the operator asked for that.
	s.showPointer = true
	if s.cfg.RemoteCursor {
		cctx, ccancel := context.WithCancel(ctx)
		wait, err := x11.WatchCursor(cctx, s.display, s.setCursor, s.movePointer, s.hasSpectators)
		if err != nil {
			ccancel()
			s.log.Warn("the capture draws the pointer: it cannot be sent to players", "err", err)
		} else {
			s.showPointer = false
			cleanup = append(cleanup, func() { ccancel(); wait() })
		}
	}
	video, err := s.launchVideo(b, vp)
	if err != nil {
		return err
	}
	if s.cfg.resizable() {
		s.log.Info("the screen follows the owner's window", "max", fmt.Sprintf("%dx%d", s.cfg.Width, s.cfg.Height))
	}

	g, gctx := errgroup.WithContext(ctx)
	videoDone := make(chan struct{})
	g.Go(func() error { defer close(videoDone); return s.runVideo(gctx, video, b, vp, inj) })
	// The capture stops before the display it reads does (cleanup runs
	// last first), also when Run fails further on.
	cleanup = append(cleanup, func() { <-videoDone })
	g.Go(func() error { return s.media.send(gctx) })

	// Audio.
	if s.cfg.Audio {
		pa, err := startPulse(ctx)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, pa.stop)
		audio, err := gst.Launch(audioPipeline(pa.server, audioSink+".monitor"),
			func(smp gst.Sample) { s.media.writeAudio(smp.Data, smp.Duration) })
		if err != nil {
			return fmt.Errorf("audio pipeline: %w", err)
		}
		cleanup = append(cleanup, audio.Stop)
		g.Go(func() error { return audio.Wait(gctx) })
		// Programs started for the desktop find the sink through PULSE_SERVER.
		os.Setenv("PULSE_SERVER", pa.server)
		if s.cfg.Demo {
			tone, err := gst.Launch("audiotestsrc is-live=true wave=sine freq=440 volume=0.05 ! audio/x-raw,rate=48000,channels=2 ! "+
				"pulsesink server="+pa.server+" device="+audioSink, nil)
			if err != nil {
				return fmt.Errorf("demo tone: %w", err)
			}
			cleanup = append(cleanup, tone.Stop)
		}
	}

	// The desktop, once the display and the audio sink are there.
	if s.cfg.Desktop != "" {
		d, err := startDesktop(s.cfg.Desktop, s.display, s.log)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, d.stop)
	}

	// Demo scene.
	if s.cfg.Demo {
		demo, err := x11.Open(s.display)
		if err != nil {
			return err
		}
		cleanup = append(cleanup, demo.Close)
		g.Go(func() error { demo.RunDemo(gctx, s.cfg.FPS, stampsPerFrame, stampCode, s.frameDrawn); return nil })
	}

	// HTTP.
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	g.Go(func() error {
		if err := srv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("streamer serve: %w", err)
		}
		return nil
	})
	errIdle := errors.New("idle")
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
			s.media.tickFPS()
			if s.cfg.IdleTimeout > 0 {
				s.mu.Lock()
				owners, _ := s.countLocked()
				idle := owners == 0 && time.Since(s.idleFrom) >= s.cfg.IdleTimeout
				s.mu.Unlock()
				if idle {
					s.log.Info("no peer within the idle timeout; exiting", "idle_timeout", s.cfg.IdleTimeout)
					return errIdle
				}
			}
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		s.closePeers()
		return nil
	})
	s.log.Info("streamer serving", "url", s.URL(), "display", s.display)
	err = g.Wait()
	if errors.Is(err, errIdle) || (err == nil && ctx.Err() != nil) {
		return nil
	}
	return err
}

// Handler serves WHEP, health, metrics and the player page.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whep", s.whepPost)
	mux.HandleFunc("DELETE /whep/{id}", s.whepDelete)
	mux.HandleFunc("DELETE /whep", s.whepDropViewers)
	mux.HandleFunc("PATCH /whep/{id}", s.whepPatch)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /", player.Handler())
	return cors(http.MaxBytesHandler(mux, maxOfferBytes+1024))
}

// Health is the /healthz body.
type Health struct {
	Status  string `json:"status"` // "ok" once the first frame is encoded, else "starting"
	Session string `json:"session"`
	Encoder string `json:"encoder"`
	Codec   string `json:"codec"`
	// Fmtp is the H.264 stream's SDP fmtp (profile and level).
	Fmtp string `json:"fmtp,omitempty"`
	// NotChosen says why each encoder preferred to the one running was not
	// chosen (an NVENC element not registered, or one that could not open
	// an encoder session).
	NotChosen map[string]string `json:"not_chosen,omitempty"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	FPS       int               `json:"fps"`
	// Peers are the owner's connected browsers (what keeps a session
	// "connected" and alive); Viewers the spectators'.
	Peers      int    `json:"peers"`
	Viewers    int    `json:"viewers"`
	Frames     uint64 `json:"frames"`
	BitrateKbs int    `json:"bitrate_kbps"`
	// GPU is NVIDIA_VISIBLE_DEVICES as Nomad's device plugin set it.
	GPU string `json:"gpu,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	h := Health{Status: "starting", Session: s.cfg.SessionID, Encoder: s.branch.Encoder, Codec: s.branch.Codec(),
		Fmtp: s.branch.Fmtp(), NotChosen: s.skipped,
		Width: s.width, Height: s.height, FPS: s.cfg.FPS, GPU: os.Getenv("NVIDIA_VISIBLE_DEVICES")}
	h.Peers, h.Viewers = s.countLocked()
	s.mu.Unlock()
	code := http.StatusServiceUnavailable
	if s.ready.Load() {
		h.Status, code = "ok", http.StatusOK
		h.Frames, h.BitrateKbs = s.media.Frames(), s.media.Bitrate()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}

// countLocked counts owner and viewer peers. Call with s.mu held.
func (s *Server) countLocked() (owners, viewers int) {
	for _, p := range s.peers {
		if p.role == token.RoleOwner {
			owners++
		} else {
			viewers++
		}
	}
	return owners, viewers
}

// addPeer adds an answered peer; reserved says it held a pending slot.
func (s *Server) addPeer(p *peer, reserved bool) {
	s.mu.Lock()
	if reserved {
		s.pending--
	}
	s.peers[p.id] = p
	n := len(s.peers)
	s.mu.Unlock()
	s.metrics.peers.Set(float64(n))
	p.log.Info("peer added", "peers", n)
}

// removePeer closes and forgets a peer; false if it was not known.
func (s *Server) removePeer(id string) bool {
	s.mu.Lock()
	p, ok := s.peers[id]
	delete(s.peers, id)
	n := len(s.peers)
	padsOf := ok && s.padPeer == id
	if padsOf {
		s.padPeer = ""
	}
	if owners, _ := s.countLocked(); ok && owners == 0 {
		s.idleFrom = time.Now() // spectators alone do not keep a stream alive
	}
	s.mu.Unlock()
	if !ok {
		return false
	}
	s.metrics.peers.Set(float64(n))
	go p.close() // Close waits for pion's goroutines; never block a callback on it.
	p.held.release(s.input, true)
	if padsOf && s.pads != nil {
		s.pads.Reset() // what this player's pads held
	}
	p.log.Info("peer removed", "peers", n)
	return true
}

func (s *Server) closePeers() {
	s.mu.Lock()
	peers := s.peers
	s.peers = map[string]*peer{}
	s.mu.Unlock()
	for _, p := range peers {
		p.close()
		p.held.release(s.input, true)
	}
}

// gstProbe detects encoders through GStreamer.
type gstProbe struct{}

func (gstProbe) HasElement(name string) bool { return gst.HasElement(name) }
func (gstProbe) Probe(desc string) error     { return gst.Probe(desc, 5*time.Second) }
func (gstProbe) Properties(el string, names []string) (map[string]bool, error) {
	return gst.Properties(el, names)
}
func (gstProbe) CheckPads(el, sinkCaps, srcCaps string) error {
	return gst.CheckPads(el, sinkCaps, srcCaps)
}
func (gstProbe) EnumNicks(el, prop string) []string { return gst.EnumNicks(el, prop) }
