package streamer

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/pion/webrtc/v4"
)

// Video encoders. The two NVENC elements are the same hardware through two
// GStreamer implementations: nvcudah264enc (GStreamer 1.22+) takes CUDA
// memory natively, nvh264enc is the older one every nvcodec build has.
const (
	EncoderNVCUDAH264 = "nvcudah264enc"
	EncoderNVH264     = "nvh264enc"
	EncoderX264       = "x264enc"
	EncoderVP8        = "vp8enc"
	// EncoderNVENC asks for either NVENC element and nothing else: what a
	// job placed on an NVENC slot runs, so the encoder it advertises is
	// the one running or the streamer fails.
	EncoderNVENC = "nvenc"
)

func isNVENC(enc string) bool { return enc == EncoderNVCUDAH264 || enc == EncoderNVH264 }

// EncoderProbe is what encoder selection needs from GStreamer.
type EncoderProbe interface {
	HasElement(name string) bool
	// Properties reports which of names the element has.
	Properties(element string, names []string) (map[string]bool, error)
	// CheckPads validates the caps before and after an element against its
	// registered pad templates.
	CheckPads(element, sinkCaps, srcCaps string) error
	// EnumNicks lists the values of an element's enum property.
	EnumNicks(element, prop string) []string
	// Probe runs a short test pipeline through a branch.
	Probe(desc string) error
}

// videoParams is what an encoder branch is built for.
type videoParams struct {
	Width, Height, FPS, Kbps int
	// Profile is the H.264 profile: "auto" (High on NVENC, constrained
	// baseline on x264), ProfileHigh or ProfileConstrainedBaseline.
	Profile string
}

// prop is one encoder property. Optional ones are left out, and logged,
// where the element lacks them (nvh264enc registers bframes and
// vbv-buffer-size only on GPUs that support them).
type prop struct {
	name, value string
	optional    bool
}

// branch is the encoder part of the video pipeline: conversion from the
// captured frames to what the encoder takes, the encoder (named "enc", so
// bitrate and key frames are driven at run time) and, for H.264, the caps
// naming its profile and level and the parser that hands whole access units
// with SPS/PPS before every key frame to the appsink.
type branch struct {
	Encoder string
	Convert string // raw capture → InCaps
	InCaps  string
	Props   []prop
	OutCaps string
	// Profile, Level and LevelIdc for H.264; Profile is "" for VP8.
	Profile  string
	Level    string
	LevelIdc byte
	// Dropped are the optional properties the element lacks.
	Dropped []string
}

// Codec is the RTP codec the branch produces ("" before one is chosen).
func (b branch) Codec() string {
	if b.Encoder == "" {
		return ""
	}
	if b.Profile == "" {
		return "video/VP8"
	}
	return "video/H264"
}

// capability is the RTP codec of the branch's stream, with fmtp for H.264
// (the stream's own, or the one an answer chose).
func (b branch) capability(fmtp string) webrtc.RTPCodecCapability {
	if b.Codec() == "video/H264" {
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp}
	}
	return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
}

// Fmtp is the SDP fmtp of the branch's stream.
func (b branch) Fmtp() string {
	if b.Profile == "" {
		return ""
	}
	return h264Fmtp(b.Profile, b.LevelIdc)
}

// desc is the branch in gst-launch syntax.
func (b branch) desc() string {
	var enc strings.Builder
	enc.WriteString(b.Encoder + " name=enc")
	for _, p := range b.Props {
		fmt.Fprintf(&enc, " %s=%s", p.name, p.value)
	}
	d := b.Convert + " ! " + b.InCaps + " ! " + enc.String() + " ! " + b.OutCaps
	if b.Profile != "" {
		d += " ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au"
	}
	return d
}

// infiniteGOP is x264's X264_KEYINT_MAX_INFINITE: no periodic key frame,
// only those forced on connect and on PLI/FIR.
const infiniteGOP = 1 << 30

// buildBranch describes enc's branch for v, checked against the element as
// registered: its properties and its pad templates.
func buildBranch(enc string, v videoParams, p EncoderProbe) (branch, error) {
	b := branch{Encoder: enc}
	// A VBV of about one frame: the encoder never lets a frame (a key frame
	// included) exceed what the link drains in one frame period, so nothing
	// queues behind a burst.
	frameKbits := max(1, v.Kbps/max(1, v.FPS))
	frameMs := max(1, 1000/max(1, v.FPS))
	switch enc {
	case EncoderNVCUDAH264, EncoderNVH264:
		if v.Profile == ProfileConstrainedBaseline {
			return b, fmt.Errorf("%s does not offer constrained-baseline (its profiles are main, high and high-4:4:4); use -h264-profile high or auto", enc)
		}
		b.Profile = ProfileHigh
		b.Convert, b.InCaps = "videoconvert n-threads=0", "video/x-raw,format=NV12"
		if p.HasElement("cudaupload") && p.HasElement("cudaconvert") {
			// Colour conversion on the GPU; the encoder reads CUDA memory.
			gpuIn := "video/x-raw(memory:CUDAMemory),format=NV12"
			if p.CheckPads(enc, gpuIn, "") == nil {
				b.Convert, b.InCaps = "cudaupload ! cudaconvert", gpuIn
			}
		}
		// The two elements, and GStreamer versions, spell some properties
		// differently; the branch takes the spelling the element has.
		names, err := p.Properties(enc, []string{"rate-control", "rc-mode", "zerolatency", "zero-reorder-delay", "bframes", "b-frames"})
		if err != nil {
			return b, err
		}
		pick := func(options ...string) string {
			for _, n := range options {
				if names[n] {
					return n
				}
			}
			return options[0]
		}
		// NVIDIA deprecated the legacy presets (low-latency-hq among them)
		// for p1..p7 with a tuning; GStreamer 1.24's elements offer those,
		// 1.22's only the legacy ones, which drivers that dropped them
		// refuse (the test pipeline fails and says so).
		b.Props = []prop{{name: "preset", value: "low-latency-hq"}}
		if slices.Contains(p.EnumNicks(enc, "preset"), "p1") {
			b.Props = []prop{{name: "preset", value: "p1"}}
			if slices.Contains(p.EnumNicks(enc, "tune"), "ultra-low-latency") {
				b.Props = append(b.Props, prop{name: "tune", value: "ultra-low-latency"})
			}
		}
		b.Props = append(b.Props,
			prop{name: pick("rate-control", "rc-mode"), value: "cbr"},
			prop{name: pick("zerolatency", "zero-reorder-delay"), value: "true", optional: true},
			prop{name: "gop-size", value: "-1"},
			prop{name: pick("bframes", "b-frames"), value: "0", optional: true},
			prop{name: "bitrate", value: fmt.Sprint(v.Kbps)},
			prop{name: "aud", value: "false", optional: true},
			prop{name: "rc-lookahead", value: "0", optional: true},
			prop{name: "vbv-buffer-size", value: fmt.Sprint(frameKbits), optional: true},
			prop{name: "repeat-sequence-header", value: "true", optional: true},
		)
	case EncoderX264:
		b.Profile = ProfileConstrainedBaseline
		if v.Profile == ProfileHigh {
			b.Profile = ProfileHigh
		}
		b.Convert, b.InCaps = "videoconvert n-threads=0", "video/x-raw,format=NV12"
		b.Props = []prop{
			{name: "tune", value: "zerolatency"},
			{name: "speed-preset", value: "ultrafast"},
			{name: "bframes", value: "0"},
			{name: "key-int-max", value: fmt.Sprint(infiniteGOP)},
			{name: "bitrate", value: fmt.Sprint(v.Kbps)},
			{name: "vbv-buf-capacity", value: fmt.Sprint(frameMs)},
			{name: "sliced-threads", value: "true"},
			{name: "aud", value: "false"},
			{name: "byte-stream", value: "true"},
		}
		if b.Profile == ProfileHigh {
			// ultrafast turns off the tools that make a stream High; the
			// 8x8 transform and CABAC make it High in its SPS too, as
			// NVENC's is, so the chain after the encoder meets what a GPU
			// sends.
			b.Props = append(b.Props, prop{name: "option-string", value: "8x8dct=1:cabac=1"})
		}
	case EncoderVP8:
		b.Convert, b.InCaps = "videoconvert n-threads=0", "video/x-raw,format=I420"
		b.Props = []prop{
			{name: "deadline", value: "1"},
			{name: "cpu-used", value: "8"},
			{name: "end-usage", value: "cbr"},
			{name: "target-bitrate", value: fmt.Sprint(v.Kbps * 1000)},
			{name: "keyframe-max-dist", value: fmt.Sprint(v.FPS * 2)},
			{name: "error-resilient", value: "partitions"},
			{name: "lag-in-frames", value: "0"},
			{name: "threads", value: "2"},
		}
		b.OutCaps = "video/x-vp8"
	default:
		return b, fmt.Errorf("unknown encoder %q", enc)
	}
	if b.Profile != "" {
		b.Level, b.LevelIdc = h264Level(v.Width, v.Height, v.FPS)
		b.OutCaps = fmt.Sprintf("video/x-h264,profile=%s,level=(string)%s,stream-format=byte-stream,alignment=au",
			h264Profiles[b.Profile].caps, b.Level)
	}
	names := make([]string, len(b.Props))
	for i, pr := range b.Props {
		names[i] = pr.name
	}
	has, err := p.Properties(enc, names)
	if err != nil {
		return b, err
	}
	kept := b.Props[:0]
	for _, pr := range b.Props {
		switch {
		case has[pr.name]:
			kept = append(kept, pr)
		case pr.optional:
			b.Dropped = append(b.Dropped, pr.name)
		default:
			return b, fmt.Errorf("%s has no property %q", enc, pr.name)
		}
	}
	b.Props = kept
	if err := p.CheckPads(enc, b.InCaps, b.OutCaps); err != nil {
		return b, err
	}
	return b, nil
}

// candidates are the encoders tried for prefer, in order.
func candidates(prefer string) []string {
	switch prefer {
	case "", "auto":
		return []string{EncoderNVCUDAH264, EncoderNVH264, EncoderX264, EncoderVP8}
	case EncoderNVENC:
		return []string{EncoderNVCUDAH264, EncoderNVH264}
	default:
		return []string{prefer}
	}
}

// ChooseEncoder picks the encoder branch: the first of prefer's candidates
// that is registered, whose branch fits the element's properties and pad
// templates, and through which a test pipeline at the configured size runs
// (the nvcodec plugin can register its encoders on a GPU without NVENC,
// such as H100, or without a driver). skipped says why each encoder tried
// before it was not chosen; it is logged and served in /healthz.
func ChooseEncoder(prefer string, v videoParams, p EncoderProbe, log *slog.Logger) (b branch, skipped map[string]string, err error) {
	skipped = map[string]string{}
	for _, enc := range candidates(prefer) {
		if !p.HasElement(enc) {
			skipped[enc] = "element not registered (no GStreamer plugin for it, or, for NVENC, no NVIDIA driver with CUDA)"
		} else if b, err = buildBranch(enc, v, p); err != nil {
			skipped[enc] = err.Error()
		} else if err = p.Probe(probePipeline(b, v)); err != nil {
			skipped[enc] = "test pipeline failed: " + err.Error()
		} else {
			if len(b.Dropped) > 0 {
				log.Info("encoder lacks optional properties", "encoder", enc, "left_out", b.Dropped)
			}
			return b, skipped, nil
		}
		log.Info("encoder not chosen", "encoder", enc, "reason", skipped[enc])
	}
	return branch{}, skipped, fmt.Errorf("%w: tried %s: %v", ErrNoEncoder, strings.Join(candidates(prefer), ", "), skipped)
}

// bitrateProperties are the encoder properties to set for a new target of
// kbps. Only the bitrate: NVENC's VBV stays the one frame of the start
// bitrate it was opened with, since changing vbv-buffer-size while playing
// makes nvcudah264enc drain and open a new session (a key frame and a
// stall on every congestion-control step); x264's is in milliseconds and
// needs no change.
func bitrateProperties(b branch, kbps int) [][2]string {
	if b.Encoder == EncoderVP8 {
		return [][2]string{{"target-bitrate", fmt.Sprint(kbps * 1000)}}
	}
	return [][2]string{{"bitrate", fmt.Sprint(kbps)}}
}

// videoPipeline captures display at the configured size and rate and ends in
// an appsink named "sink". showPointer draws the pointer into the video;
// without it the player draws it (cursor.go).
func videoPipeline(display string, b branch, v videoParams, showPointer bool) string {
	return fmt.Sprintf("ximagesrc display-name=%s use-damage=false show-pointer=%t ! "+
		"video/x-raw,framerate=%d/1 ! queue max-size-buffers=1 leaky=downstream ! videoscale ! video/x-raw,width=%d,height=%d ! %s ! "+
		"appsink name=sink sync=false max-buffers=2 drop=true emit-signals=false",
		display, showPointer, v.FPS, v.Width, v.Height, b.desc())
}

// probePipeline is the short test pipeline for a branch: three frames at
// the configured size, so the level the caps name is the one that runs.
func probePipeline(b branch, v videoParams) string {
	return fmt.Sprintf("videotestsrc num-buffers=3 ! video/x-raw,format=BGRx,width=%d,height=%d,framerate=%d/1 ! %s ! appsink name=sink sync=false",
		v.Width, v.Height, v.FPS, b.desc())
}

// audioPipeline captures a PulseAudio source and encodes 10 ms Opus frames.
func audioPipeline(server, device string) string {
	return fmt.Sprintf("pulsesrc server=%s device=%s do-timestamp=true buffer-time=20000 latency-time=10000 ! "+
		"audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! "+
		"opusenc name=enc bitrate=96000 frame-size=10 ! appsink name=sink sync=false max-buffers=4 drop=true", server, device)
}
