package streamer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/metal-stream/metal/internal/token"
)

// peer is one browser connected over WHEP.
type peer struct {
	id   string
	role token.Role
	pc   *webrtc.PeerConnection
	log  *slog.Logger

	closeOnce sync.Once
	done      chan struct{}
	bitrate   int // latest congestion-control target, bps; guarded by Server.mu

	// Input, per peer whatever its data channels: one input channel, one
	// limiter for accepted messages and one for refusals (a viewer, a bad
	// message), and the keys and buttons it holds down.
	inputMu sync.Mutex
	inputDC *webrtc.DataChannel
	// cursorBehind is the cursor message a backed-up channel skipped.
	cursorBehind []byte
	clipDC       *webrtc.DataChannel // the owner's clipboard channel (clipboard.go)
	restartMu    sync.Mutex          // one ICE restart at a time (icerestart.go)
	limit        *rate.Limiter
	refusals     *rate.Limiter
	held         held
}

// api builds a WebRTC API for one peer: codecs, the playout-delay extension,
// NACK, RTCP reports, TWCC and a Google congestion controller whose estimate
// drives the encoder bitrate.
func (s *Server) api(estimators chan<- cc.BandwidthEstimator, fmtp string) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	// The one video codec this stream is, with the fmtp answerFmtp chose
	// from the peer's offer (a profile whose decoders take the stream, at
	// its level), so what is negotiated is what is sent.
	s.mu.Lock()
	stream := s.branch
	s.mu.Unlock()
	video := stream.capability(fmtp)
	video.RTCPFeedback = videoFeedback
	videoPT := webrtc.PayloadType(96)
	if stream.Codec() == "video/H264" {
		videoPT = 102
	}
	codecs := []struct {
		c  webrtc.RTPCodecCapability
		pt webrtc.PayloadType
		t  webrtc.RTPCodecType
	}{
		{video, videoPT, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"}, 111, webrtc.RTPCodecTypeAudio},
	}
	for _, c := range codecs {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: c.c, PayloadType: c.pt}, c.t); err != nil {
			return nil, fmt.Errorf("register codec %s: %w", c.c.MimeType, err)
		}
	}
	i := &interceptor.Registry{}
	if s.cfg.PlayoutDelayZero {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: PlayoutDelayURI}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("register playout-delay: %w", err)
		}
		i.Add(playoutDelayFactory{})
	}
	ccf, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		return gcc.NewSendSideBWE(
			gcc.SendSideBWEInitialBitrate(s.cfg.StartKbps*1000),
			gcc.SendSideBWEMinBitrate(s.cfg.MinKbps*1000),
			gcc.SendSideBWEMaxBitrate(s.cfg.MaxKbps*1000),
			// No pacing: a paced key frame arrives late, and latency is the product.
			gcc.SendSideBWEPacer(gcc.NewNoOpPacer()),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("congestion controller: %w", err)
	}
	ccf.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) { estimators <- e })
	i.Add(ccf)
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(m, i); err != nil {
		return nil, fmt.Errorf("twcc: %w", err)
	}
	if err := webrtc.RegisterDefaultInterceptors(m, i); err != nil {
		return nil, fmt.Errorf("interceptors: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(i), webrtc.WithSettingEngine(s.settings)), nil
}

var videoFeedback = []webrtc.RTCPFeedback{
	{Type: "goog-remb"}, {Type: "transport-cc"}, {Type: "ccm", Parameter: "fir"},
	{Type: "nack"}, {Type: "nack", Parameter: "pli"},
}

// newPeer answers offer for a peer with role. It waits for ICE gathering so
// the answer carries every candidate (WHEP without trickle).
func (s *Server) newPeer(ctx context.Context, id string, role token.Role, offer, fmtp string) (*peer, string, error) {
	estimators := make(chan cc.BandwidthEstimator, 1)
	api, err := s.api(estimators, fmtp)
	if err != nil {
		return nil, "", err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("new peer connection: %w", err)
	}
	p := &peer{id: id, role: role, pc: pc, done: make(chan struct{}),
		log:   s.log.With("peer", id, "role", role),
		limit: rate.NewLimiter(1000, 200), refusals: rate.NewLimiter(20, 20)}
	fail := func(err error) (*peer, string, error) {
		_ = pc.Close()
		return nil, "", err
	}

	videoSender, err := pc.AddTrack(s.media.Video)
	if err != nil {
		return fail(fmt.Errorf("add video track: %w", err))
	}
	if _, err := pc.AddTrack(s.media.Audio); err != nil {
		return fail(fmt.Errorf("add audio track: %w", err))
	}
	pc.OnDataChannel(func(dc *webrtc.DataChannel) { s.handleDataChannel(p, dc) })
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		p.log.Info("peer connection state", "state", st.String())
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.media.RequestKeyframe()
		case webrtc.PeerConnectionStateDisconnected:
			// The network dropped: let go of held keys now rather than when
			// ICE gives up; the player presses again if it comes back.
			p.held.release(s.input, false)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.removePeer(p.id)
		}
	})

	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail(fmt.Errorf("%w: %v", errBadOffer, err))
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", errBadOffer, err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(fmt.Errorf("set local description: %w", err))
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(fmt.Errorf("ice gathering: %w", ctx.Err()))
	}

	go s.readRTCP(p, videoSender)
	go s.followBitrate(p, estimators)
	return p, pc.LocalDescription().SDP, nil
}

var errBadOffer = errors.New("unusable SDP offer")

// readRTCP handles PLI and FIR with a key frame and records RTT and loss
// from receiver reports. It ends when the sender closes.
func (s *Server) readRTCP(p *peer, sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			switch r := pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				s.media.RequestKeyframe()
			case *rtcp.ReceiverReport:
				for _, rep := range r.Reports {
					s.metrics.loss.Set(float64(rep.FractionLost) / 256)
					if rtt, ok := rttFromReport(rep, time.Now()); ok {
						s.metrics.rtt.Set(rtt.Seconds())
					}
				}
			}
		}
	}
}

// followBitrate applies this peer's congestion-control target; with several
// peers the encoder follows the slowest.
func (s *Server) followBitrate(p *peer, estimators <-chan cc.BandwidthEstimator) {
	var est cc.BandwidthEstimator
	select {
	case est = <-estimators:
	case <-p.done:
		return
	}
	est.OnTargetBitrateChange(func(bps int) {
		s.mu.Lock()
		p.bitrate = bps
		lowest := bps
		for _, q := range s.peers {
			if q.bitrate > 0 && q.bitrate < lowest {
				lowest = q.bitrate
			}
		}
		s.mu.Unlock()
		s.media.SetBitrate(lowest)
	})
}

// inputError is sent back on the data channel for a refused message.
type inputError struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

// handleDataChannel validates and injects input from the owner; any other
// peer gets an error reply (at most 20 a second) for every message, and
// nothing is injected. A peer has one input channel: a second one is
// closed. Limits are per peer, so opening channels buys nothing.
func (s *Server) handleDataChannel(p *peer, dc *webrtc.DataChannel) {
	if dc.Label() == "clipboard" {
		s.handleClipboard(p, dc)
		return
	}
	if dc.Label() != "input" {
		p.log.Warn("unknown data channel closed", "label", dc.Label())
		_ = dc.Close()
		return
	}
	if !p.claim(&p.inputDC, dc) {
		p.log.Warn("second input channel closed")
		s.metrics.inputMessages.WithLabelValues("refused").Inc()
		_ = dc.Close()
		return
	}
	// The cursor, as soon as the channel is open (pion calls this at once
	// if it already is); later changes follow from setCursor.
	dc.OnOpen(func() { s.greet(p) })
	dc.SetBufferedAmountLowThreshold(maxBuffered / 2)
	dc.OnBufferedAmountLow(p.inputDrained)
	reply := func(err error) {
		// Refusals are answered at a bounded rate: a flood of bad or
		// view-only messages costs the streamer no more than that.
		if !p.refusals.Allow() {
			return
		}
		b, _ := json.Marshal(inputError{Type: "error", Error: err.Error()})
		_ = dc.SendText(string(b))
	}
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		if p.role != token.RoleOwner {
			s.metrics.inputMessages.WithLabelValues("refused").Inc()
			reply(ErrViewOnly)
			return
		}
		if !p.limit.Allow() {
			s.metrics.inputMessages.WithLabelValues("rate_limited").Inc()
			reply(fmt.Errorf("%w: more than 1000 messages a second", ErrBadInput))
			return
		}
		m, err := ParseInput(msg.Data)
		if err != nil {
			s.metrics.inputMessages.WithLabelValues("invalid").Inc()
			reply(err)
			return
		}
		if m.Type == "resize" {
			if !s.cfg.resizable() {
				reply(ErrFixedResolution)
				return
			}
			s.requestResize(*m.Width, *m.Height)
			s.metrics.inputMessages.WithLabelValues("ok").Inc()
			return
		}
		if m.Type == "pad" {
			if s.pads == nil {
				reply(ErrNoGamepad)
				return
			}
			s.mu.Lock()
			live := s.peers[p.id] == p
			if live {
				s.padPeer = p.id
			}
			s.mu.Unlock()
			if !live {
				return // removed: its pads were let go of
			}
			if err := s.pads.Set(*m.Index, m.Buttons, m.Axes); err != nil {
				s.metrics.inputMessages.WithLabelValues("invalid").Inc()
				reply(err)
				return
			}
			s.metrics.inputMessages.WithLabelValues("ok").Inc()
			return
		}
		if s.input == nil {
			reply(errors.New("no input device"))
			return
		}
		w, h := s.screenSize()
		if err := p.held.inject(m, s.input, w, h); err != nil {
			s.metrics.inputMessages.WithLabelValues("invalid").Inc()
			reply(err)
			return
		}
		s.metrics.inputMessages.WithLabelValues("ok").Inc()
	})
}

// claim makes dc the peer's channel in slot unless it has one: a peer has
// one channel of each kind (a second is closed by the caller).
func (p *peer) claim(slot **webrtc.DataChannel, dc *webrtc.DataChannel) bool {
	p.inputMu.Lock()
	defer p.inputMu.Unlock()
	if *slot != nil {
		return false
	}
	*slot = dc
	return true
}

func (p *peer) close() {
	p.closeOnce.Do(func() {
		close(p.done)
		_ = p.pc.Close()
	})
}
