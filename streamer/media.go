package streamer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// Encoder is what the media fan-out needs from the capture pipeline.
type Encoder interface {
	ForceKeyframe()
	SetProperty(name, value string)
}

// Media holds the local tracks every peer shares and drives the encoder:
// key frames on request, bitrate from congestion control.
type Media struct {
	Video   *videoTrack
	Audio   *webrtc.TrackLocalStaticSample
	branch  branch
	fps     int
	minKbps int
	maxKbps int
	m       *metrics

	mu         sync.Mutex
	enc        Encoder
	lastKey    time.Time
	keyPending bool
	kbps       int

	frames     atomic.Uint64
	lastSecond atomic.Uint64

	queue      chan frame
	dropping   atomic.Bool                                     // a frame was dropped: drop until a key frame
	writeFrame func(data []byte, pts, dur time.Duration) error // the video track's; a test's
}

func newMedia(b branch, cfg Config, m *metrics) (*Media, error) {
	video, err := newVideoTrack(b.capability(b.Fmtp()))
	if err != nil {
		return nil, err
	}
	audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
	}, "audio", "metal")
	if err != nil {
		return nil, err
	}
	return &Media{Video: video, Audio: audio, branch: b, fps: cfg.FPS,
		minKbps: cfg.MinKbps, maxKbps: cfg.MaxKbps, kbps: cfg.StartKbps, m: m,
		queue: make(chan frame, sendQueue), writeFrame: video.writeFrame}, nil
}

// setEncoder attaches the running pipeline.
func (md *Media) setEncoder(e Encoder) {
	md.mu.Lock()
	md.enc = e
	md.mu.Unlock()
}

// frame is an encoded frame on its way from the encoder to the peers.
type frame struct {
	data     []byte
	pts, dur time.Duration
}

// sendQueue is how many encoded frames may wait for the sender. Past it
// (the sender stalled: a slow peer, a starved CPU) the newest frame is
// dropped, and since every later frame refers to it, a key frame is asked
// for.
const sendQueue = 4

// writeVideo hands one encoded frame, stamped with its capture PTS (see
// videoTrack), to the sender; it never waits on packetising, encryption or
// the network, so the encoder's streaming thread goes on to the next frame.
func (md *Media) writeVideo(data []byte, pts, dur, latency time.Duration) {
	if dur <= 0 {
		dur = time.Second / time.Duration(md.fps)
	}
	md.frames.Add(1)
	md.m.frames.Inc()
	if latency > 0 {
		md.m.encodeLatency.Observe(latency.Seconds())
	}
	// After a drop, every frame up to the next key frame refers to one the
	// browser never gets: those are dropped too (the RTP sequence stays
	// contiguous, so the browser would not ask for a repair and would show
	// the damage until then).
	key := isKeyFrame(md.branch.Codec(), data)
	if md.dropping.Load() && !key {
		md.m.framesDropped.Inc()
		md.RequestKeyframe() // coalesced; asked again in case one was lost
		return
	}
	select {
	case md.queue <- frame{data, pts, dur}:
		md.dropping.Store(false)
	default:
		md.m.framesDropped.Inc()
		md.dropping.Store(true)
		md.RequestKeyframe()
	}
}

// isKeyFrame reports whether an encoded frame starts a new picture chain:
// an H.264 access unit with an IDR slice (NAL type 5), or a VP8 key frame
// (bit 0 of its first byte clear).
func isKeyFrame(codec string, data []byte) bool {
	if codec == "video/VP8" {
		return len(data) > 0 && data[0]&1 == 0
	}
	for i := 0; i+3 < len(data); i++ {
		if data[i] == 0 && data[i+1] == 0 && data[i+2] == 1 && data[i+3]&0x1f == 5 {
			return true
		}
	}
	return false
}

// send writes queued frames to every peer (packetise, encrypt, send) until
// ctx ends: the one place frames leave, in order.
func (md *Media) send(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-md.queue:
			_ = md.writeFrame(f.data, f.pts, f.dur)
		}
	}
}

func (md *Media) writeAudio(data []byte, dur time.Duration) {
	if dur <= 0 {
		dur = 10 * time.Millisecond
	}
	_ = md.Audio.WriteSample(media.Sample{Data: data, Duration: dur})
}

// Frames is the number of encoded video frames so far.
func (md *Media) Frames() uint64 { return md.frames.Load() }

// tickFPS updates the fps gauge; call once a second.
func (md *Media) tickFPS() {
	now := md.frames.Load()
	md.m.fps.Set(float64(now - md.lastSecond.Swap(now)))
}

// keyframeGap is the least time between two forced key frames: a PLI storm
// from several peers must not turn the stream into key frames only.
const keyframeGap = 250 * time.Millisecond

// RequestKeyframe asks for a key frame. At most one is forced per
// keyframeGap; a request inside the gap is never dropped but coalesced into
// one forced at the gap's end, so a peer that joined or lost a frame just
// after another one's key frame still gets its own.
func (md *Media) RequestKeyframe() {
	md.mu.Lock()
	defer md.mu.Unlock()
	md.m.keyframeRequests.Inc()
	if md.enc == nil {
		return
	}
	wait := keyframeGap - time.Since(md.lastKey)
	if wait <= 0 && !md.keyPending {
		md.lastKey = time.Now()
		md.enc.ForceKeyframe()
		return
	}
	if md.keyPending {
		return // one is on its way, after this request
	}
	wait = max(wait, 0)
	md.keyPending = true
	time.AfterFunc(wait, func() {
		md.mu.Lock()
		defer md.mu.Unlock()
		md.keyPending = false
		md.lastKey = time.Now()
		md.enc.ForceKeyframe()
	})
}

// SetBitrate applies a congestion-control target, clamped to the configured
// bounds, when it differs by more than 5% from the current one.
func (md *Media) SetBitrate(bps int) {
	kbps := max(md.minKbps, min(md.maxKbps, bps/1000))
	md.mu.Lock()
	defer md.mu.Unlock()
	if md.enc == nil || abs(kbps-md.kbps)*20 < md.kbps {
		return
	}
	md.kbps = kbps
	for _, p := range bitrateProperties(md.branch, kbps) {
		md.enc.SetProperty(p[0], p[1])
	}
	md.m.targetBitrate.Set(float64(kbps * 1000))
}

// Bitrate is the encoder's current target in kbit/s.
func (md *Media) Bitrate() int {
	md.mu.Lock()
	defer md.mu.Unlock()
	return md.kbps
}
