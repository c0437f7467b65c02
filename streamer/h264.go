package streamer

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// H.264 profiles the streamer sends. NVENC offers main, high and
// high-4:4:4 (not constrained baseline, and h264parse does not change
// profiles), so an NVENC stream is High; x264 sends either.
const (
	ProfileHigh                = "high"
	ProfileConstrainedBaseline = "constrained-baseline"
)

// h264Profile is one profile as caps and SDP name it.
type h264Profile struct {
	caps string // GStreamer caps "profile"
	idc  byte   // profile_idc
	iop  byte   // constraint flags (profile-iop)
}

var h264Profiles = map[string]h264Profile{
	ProfileHigh:                {caps: "high", idc: 0x64, iop: 0x00},
	ProfileConstrainedBaseline: {caps: "constrained-baseline", idc: 0x42, iop: 0xe0},
}

// h264Levels are the H.264 levels from 3.1 up (Table A-1): the largest
// frame in macroblocks and macroblocks per second each allows. 3.1 is the
// floor: it is what Chromium offers, and what 720p30 needs.
var h264Levels = []struct {
	name    string
	idc     byte
	maxFS   int
	maxMBPS int
}{
	{"3.1", 31, 3600, 108000},
	{"3.2", 32, 5120, 216000},
	{"4", 40, 8192, 245760},
	{"4.2", 42, 8704, 522240},
	{"5", 50, 22080, 589824},
	{"5.1", 51, 36864, 983040},
	{"5.2", 52, 36864, 2073600},
}

// h264Level is the lowest level that holds w×h at fps: its caps name and
// level_idc. Past 5.2 it answers 5.2 (browsers decode it regardless; the
// caps must still name a level).
func h264Level(w, h, fps int) (string, byte) {
	mbs := ((w + 15) / 16) * ((h + 15) / 16)
	for _, l := range h264Levels {
		if mbs <= l.maxFS && mbs*fps <= l.maxMBPS {
			return l.name, l.idc
		}
	}
	last := h264Levels[len(h264Levels)-1]
	return last.name, last.idc
}

// h264Fmtp is the SDP fmtp a stream of profile at level_idc is sent with:
// packetization mode 1 (FU-A, what pion's packetiser emits) and level
// asymmetry, so a browser that offered a lower level still takes it.
func h264Fmtp(profile string, levelIdc byte) string {
	p := h264Profiles[profile]
	return fmtpLine(fmt.Sprintf("%02x%02x", p.idc, p.iop), levelIdc)
}

// fmtpLine is the fmtp for a profile (profile_idc and constraint flags as
// four hex digits) at level_idc.
func fmtpLine(profile string, levelIdc byte) string {
	return fmt.Sprintf("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=%s%02x", profile, levelIdc)
}

// decodable is, for a stream of each profile, the offered profiles (H.264
// profile_idc and constraint flags, as profile-level-id spells them) whose
// decoders decode it, best first. A High stream with no B-frames (what every
// branch sends) decodes as High, Constrained High or High 4:4:4 Predictive
// (Debian's Chromium offers that last one and not High); constrained
// baseline decodes as any of these.
var decodable = map[string][]string{
	ProfileHigh:                {"6400", "640c", "f400"},
	ProfileConstrainedBaseline: {"42e0", "4200", "4d00", "6400", "640c", "f400"},
}

// answerFmtp is the fmtp to answer an offer with for stream: the best
// offered H.264 profile (packetization mode 1) that decodes the stream, at
// the stream's level (level asymmetry lets the browser take a higher level
// than it offered). VP8 streams answer "" when VP8 is offered. The error
// says what the browser offered instead.
func answerFmtp(d *sdp.SessionDescription, stream branch) (string, error) {
	offered := map[string]bool{}
	var seen []string
	vp8 := false
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "video" {
			continue
		}
		codecs := map[string]string{} // payload type → codec name
		fmtps := map[string]string{}
		for _, a := range m.Attributes {
			pt, rest, ok := strings.Cut(a.Value, " ")
			if !ok {
				continue
			}
			switch a.Key {
			case "rtpmap":
				codecs[pt] = strings.ToUpper(strings.SplitN(rest, "/", 2)[0])
			case "fmtp":
				fmtps[pt] = rest
			}
		}
		for pt, name := range codecs {
			if name == "VP8" {
				vp8 = true
			}
			if name != "H264" {
				continue
			}
			params := map[string]string{}
			for _, kv := range strings.Split(fmtps[pt], ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
				params[strings.ToLower(k)] = strings.ToLower(v)
			}
			plid := params["profile-level-id"]
			seen = append(seen, plid)
			if params["packetization-mode"] == "1" && len(plid) == 6 {
				offered[plid[:4]] = true
			}
		}
	}
	if stream.Profile == "" {
		if !vp8 {
			return "", fmt.Errorf("the offer has no VP8, which this stream is")
		}
		return "", nil
	}
	for _, p := range decodable[stream.Profile] {
		if offered[p] {
			return fmtpLine(p, stream.LevelIdc), nil
		}
	}
	return "", fmt.Errorf("the offer has no H.264 that decodes %s (profile-level-id %s with packetization-mode=1), which this stream is; it offers H.264 %v",
		stream.Profile, strings.Join(decodable[stream.Profile], "xx, ")+"xx", seen)
}
