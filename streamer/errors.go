package streamer

import "errors"

var (
	// ErrBadInput is wrapped by every input message validation error.
	ErrBadInput = errors.New("bad input message")
	// errPeerGone refuses input that arrives after its peer was removed.
	errPeerGone = errors.New("peer gone")
	// ErrViewOnly is returned for input from a peer without the owner role.
	ErrViewOnly = errors.New("view-only peer: input refused")
	// ErrFixedResolution refuses a resize where the screen does not follow
	// the window (-fixed-resolution, the demo scene, an attached display).
	ErrFixedResolution = errors.New("fixed resolution: resize refused")
	// ErrNoGamepad refuses gamepad input in a session without gamepads
	// (-gamepad off).
	ErrNoGamepad = errors.New("no gamepads in this session (-gamepad off)")
	// ErrNoEncoder is returned when no usable video encoder is found.
	ErrNoEncoder = errors.New("no usable video encoder")
)
