package streamer

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// videoTrack is the video every peer shares. Its RTP timestamps come from
// each frame's capture PTS (90 kHz), not from summed frame durations: a
// frame the leaky queue dropped before the encoder leaves its gap in the
// RTP clock, which so never falls behind the capture clock (pion's
// TrackLocalStaticSample advances the clock by each sample's duration
// after sending it, so a gap would show one frame late, and summed nominal
// durations drift slow with every drop).
type videoTrack struct {
	*webrtc.TrackLocalStaticRTP
	write func(*rtp.Packet) error // the track's WriteRTP; tests replace it

	// writeFrame's only caller is Media's sender goroutine, one frame at a
	// time; mu keeps the clock consistent all the same.
	mu     sync.Mutex
	pk     rtp.Packetizer
	start  uint32        // the RTP timestamp of PTS first
	first  time.Duration // the first frame's PTS
	last   uint32        // the last frame's RTP timestamp
	frames int
}

// rtpOutboundMTU is pion's payload size for its sample tracks.
const rtpOutboundMTU = 1200

func newVideoTrack(codec webrtc.RTPCodecCapability) (*videoTrack, error) {
	t, err := webrtc.NewTrackLocalStaticRTP(codec, "video", "metal")
	if err != nil {
		return nil, err
	}
	var pay rtp.Payloader = &codecs.H264Payloader{}
	if codec.MimeType == webrtc.MimeTypeVP8 {
		pay = &codecs.VP8Payloader{EnablePictureID: true}
	}
	// SSRC and payload type are each peer's, set by WriteRTP per binding.
	v := &videoTrack{TrackLocalStaticRTP: t, start: rand.Uint32(), first: -1,
		pk: rtp.NewPacketizer(rtpOutboundMTU, 0, 0, pay, rtp.NewRandomSequencer(), 90000)}
	v.write = t.WriteRTP
	return v, nil
}

// writeFrame sends one encoded frame: at its PTS when known (pts >= 0),
// else dur after the previous frame.
func (v *videoTrack) writeFrame(data []byte, pts, dur time.Duration) error {
	v.mu.Lock()
	var ts uint32
	switch {
	case pts >= 0 && v.first >= 0 && pts > v.first:
		ts = v.start + ticks(pts-v.first)
	case v.frames == 0:
		ts = v.start
	default:
		ts = v.last + ticks(dur)
	}
	if v.frames > 0 && int32(ts-v.last) <= 0 {
		ts = v.last + max(ticks(dur), 1) // never backwards, never twice
	}
	if pts >= 0 && (v.first < 0 || ts != v.start+ticks(pts-v.first)) {
		// The first PTS, or PTS that went back (a pipeline reset): the
		// clock is anchored again here.
		v.first, v.start = pts, ts
	}
	v.frames++
	v.last = ts
	packets := v.pk.Packetize(data, 0)
	v.mu.Unlock()
	var first error
	for _, p := range packets {
		p.Timestamp = ts
		if err := v.write(p); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ticks is d on the 90 kHz video clock, without overflow for days.
func ticks(d time.Duration) uint32 {
	return uint32(int64(d/time.Second)*90000 + int64(d%time.Second)*90000/int64(time.Second))
}
