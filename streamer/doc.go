// Package streamer streams one X display to browsers over WebRTC: a
// GStreamer capture-and-encode pipeline (NVENC, else x264, else VP8), Opus
// audio from a PulseAudio null sink, WHEP signalling authorised by session
// tokens (PATCH restarts ICE: icerestart.go), an input data channel
// injected through XTest, the screen following the owner's window
// (resize.go), the clipboard both ways (clipboard.go) and gamepads
// (gamepad.go).
//
// cgo is fenced into streamer/internal/gst, streamer/internal/x11 and
// streamer/internal/uinput; this package sees them through the narrow
// interfaces in media.go, input.go, resize.go and gamepad.go.
// It is not a scheduler: Nomad decides where a streamer runs, and the
// streamer exits (code 0) when nobody has watched it for the idle timeout.
package streamer
