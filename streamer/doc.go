// Package streamer streams one X display to browsers over WebRTC: a
// GStreamer capture-and-encode pipeline (NVENC, else x264, else VP8), Opus
// audio from a PulseAudio null sink, WHEP signalling authorised by session
// tokens, and an input data channel injected through XTest.
//
// cgo is fenced into streamer/internal/gst and streamer/internal/x11; this
// package sees them through the narrow interfaces in media.go and input.go.
// It is not a scheduler: Nomad decides where a streamer runs, and the
// streamer exits (code 0) when nobody has watched it for the idle timeout.
package streamer
