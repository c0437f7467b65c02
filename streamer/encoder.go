package streamer

import (
	"fmt"
	"log/slog"
)

// Video encoders in order of preference.
const (
	EncoderNVH264 = "nvh264enc"
	EncoderX264   = "x264enc"
	EncoderVP8    = "vp8enc"
)

// EncoderProbe is what encoder selection needs from GStreamer.
type EncoderProbe interface {
	HasElement(name string) bool
	// Probe runs a short test pipeline through the encoder.
	Probe(encoder string) error
}

// ChooseEncoder picks the encoder: the preferred one when not "auto", else
// NVENC only if the element exists AND a test pipeline through it runs (the
// nvcodec plugin can register nvh264enc on a GPU without NVENC, such as
// H100), then x264, then VP8.
func ChooseEncoder(prefer string, p EncoderProbe, log *slog.Logger) (string, error) {
	if prefer != "" && prefer != "auto" {
		if !p.HasElement(prefer) {
			return "", fmt.Errorf("%w: %s is not installed", ErrNoEncoder, prefer)
		}
		if err := p.Probe(prefer); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrNoEncoder, prefer, err)
		}
		return prefer, nil
	}
	for _, enc := range []string{EncoderNVH264, EncoderX264, EncoderVP8} {
		if !p.HasElement(enc) {
			log.Info("encoder not available", "encoder", enc, "reason", "element not registered")
			continue
		}
		if err := p.Probe(enc); err != nil {
			log.Info("encoder not available", "encoder", enc, "reason", err)
			continue
		}
		return enc, nil
	}
	return "", ErrNoEncoder
}

// Codec is the RTP codec an encoder produces.
func Codec(encoder string) string {
	if encoder == EncoderVP8 {
		return "video/VP8"
	}
	return "video/H264"
}

// encoderDesc is the encoder part of a pipeline, named "enc" so bitrate and
// key frames can be driven at run time, with caps that WebRTC browsers decode
// (H.264 constrained baseline, Annex B byte stream).
func encoderDesc(encoder string, fps, kbps int) string {
	gop := fps * 2
	switch encoder {
	case EncoderNVH264:
		return fmt.Sprintf("videoconvert ! video/x-raw,format=NV12 ! "+
			"nvh264enc name=enc preset=low-latency-hq rc-mode=cbr zerolatency=true bframes=0 gop-size=%d bitrate=%d ! "+
			"h264parse config-interval=-1 ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au", gop, kbps)
	case EncoderX264:
		return fmt.Sprintf("videoconvert ! video/x-raw,format=I420 ! "+
			"x264enc name=enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=%d bitrate=%d "+
			"vbv-buf-capacity=200 sliced-threads=true aud=false byte-stream=true ! "+
			"video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au", gop, kbps)
	default:
		return fmt.Sprintf("videoconvert ! video/x-raw,format=I420 ! "+
			"vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=%d keyframe-max-dist=%d "+
			"error-resilient=partitions lag-in-frames=0 threads=2", kbps*1000, gop)
	}
}

// bitrateProperty is the encoder property and value for kbps.
func bitrateProperty(encoder string, kbps int) (string, string) {
	if encoder == EncoderVP8 {
		return "target-bitrate", fmt.Sprint(kbps * 1000)
	}
	return "bitrate", fmt.Sprint(kbps)
}

// videoPipeline captures display at the configured size and rate and ends in
// an appsink named "sink".
func videoPipeline(display string, encoder string, w, h, fps, kbps int) string {
	return fmt.Sprintf("ximagesrc display-name=%s use-damage=false show-pointer=true ! "+
		"video/x-raw,framerate=%d/1 ! queue max-size-buffers=1 leaky=downstream ! videoscale ! video/x-raw,width=%d,height=%d ! %s ! "+
		"appsink name=sink sync=false max-buffers=2 drop=true emit-signals=false",
		display, fps, w, h, encoderDesc(encoder, fps, kbps))
}

// probePipeline is the short test pipeline for an encoder.
func probePipeline(encoder string) string {
	return fmt.Sprintf("videotestsrc num-buffers=3 ! video/x-raw,width=320,height=240,framerate=30/1 ! %s ! appsink name=sink sync=false",
		encoderDesc(encoder, 30, 1000))
}

// audioPipeline captures a PulseAudio source and encodes 10 ms Opus frames.
func audioPipeline(server, device string) string {
	return fmt.Sprintf("pulsesrc server=%s device=%s do-timestamp=true buffer-time=20000 latency-time=10000 ! "+
		"audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! "+
		"opusenc name=enc bitrate=96000 frame-size=10 ! appsink name=sink sync=false max-buffers=4 drop=true", server, device)
}
