package streamer

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is the streamer's configuration; DefaultConfig documents defaults.
type Config struct {
	// Listen is the HTTP address for WHEP, /healthz, /metrics and the page.
	Listen string
	// ICEPort is the one UDP port for all ICE traffic (0 picks a free one).
	ICEPort int
	// PublicIPs are advertised in ICE candidates instead of local addresses
	// (SetICEAddressRewriteRules); empty advertises local addresses.
	PublicIPs []string
	// Loopback includes 127.0.0.1 candidates (tests and a laptop).
	Loopback bool
	// ICEInterfaces limits candidate gathering to these interfaces; empty
	// means all.
	ICEInterfaces []string

	// Display attaches to an existing X display (":0"); empty starts Xvfb.
	Display string
	// Width, Height and FPS of the capture and encode. Width x Height is
	// the screen's size at the start and, unless FixedResolution, the
	// largest the owner's window can make it (resize.go).
	Width, Height, FPS int
	// FixedResolution keeps the screen at Width x Height; otherwise it
	// follows the owner's window (on an Xvfb this streamer started,
	// without the demo scene).
	FixedResolution bool
	// Encoder is "auto" (nvcudah264enc, nvh264enc, x264enc, then vp8enc),
	// "nvenc" (either NVENC element, nothing else) or one element.
	Encoder string
	// H264Profile is "auto" (High on NVENC, constrained baseline on x264),
	// "high" or "constrained-baseline".
	H264Profile string
	// StartKbps, MinKbps and MaxKbps bound congestion control.
	StartKbps, MinKbps, MaxKbps int
	// Audio enables the Opus track from a PulseAudio null sink.
	Audio bool
	// Demo draws a moving scene with a frame code on the display.
	Demo bool
	// Desktop is a shell command started on the display once it is up
	// (with DISPLAY and PULSE_SERVER set) and ended with the streamer: the
	// session's desktop, for example "openbox --startup xterm". Empty starts none.
	Desktop string
	// RemoteCursor sends the X cursor to the players, who draw it at input
	// latency, and keeps it out of the capture; false captures it.
	RemoteCursor bool

	// Gamepad is where the owner's gamepads go (gamepad.go): "auto"
	// (uinput where /dev/uinput is writable, otherwise keys), "uinput",
	// "keys" or "off".
	Gamepad string

	// SessionID is the session this streamer serves; tokens for another
	// session are refused.
	SessionID string
	// TokenKey verifies session tokens (at least 32 bytes).
	TokenKey []byte
	// IdleTimeout ends the streamer (exit 0) after this long with no peer;
	// 0 disables it.
	IdleTimeout time.Duration
	// SingleUseTokens refuses WHEP offers whose token has no ID: what a
	// gateway-run streamer sets, since the gateway mints only those.
	SingleUseTokens bool
	// PlayoutDelayZero sends the playout-delay header extension with
	// min = max = 0, which tells Chromium to render without a jitter buffer.
	PlayoutDelayZero bool
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:           "127.0.0.1:8081",
		ICEPort:          8443,
		Width:            1280,
		Height:           720,
		FPS:              30,
		Encoder:          "auto",
		H264Profile:      "auto",
		StartKbps:        4000,
		MinKbps:          300,
		MaxKbps:          20000,
		Audio:            true,
		Demo:             true,
		RemoteCursor:     true,
		Gamepad:          GamepadAuto,
		SessionID:        "local",
		IdleTimeout:      0,
		PlayoutDelayZero: true,
	}
}

// Validate checks the configuration, naming the flag at fault.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: %w", c.Listen, err))
	}
	if c.ICEPort < 0 || c.ICEPort > 65535 {
		errs = append(errs, fmt.Errorf("-ice-port %d out of range", c.ICEPort))
	}
	for _, ip := range c.PublicIPs {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("-public-ip %q is not an IP address", ip))
		}
	}
	if !(c.Width == 1280 && c.Height == 720) && !(c.Width == 1920 && c.Height == 1080) &&
		(c.Width < 64 || c.Height < 64 || c.Width > 3840 || c.Height > 2160 || c.Width%2 != 0 || c.Height%2 != 0) {
		errs = append(errs, fmt.Errorf("-resolution %dx%d: want even sizes from 64x64 to 3840x2160 (720p and 1080p are tested)", c.Width, c.Height))
	}
	if c.FPS < 1 || c.FPS > 120 {
		errs = append(errs, fmt.Errorf("-fps %d: want 1..120 (30 and 60 are tested)", c.FPS))
	}
	switch c.Encoder {
	case "auto", EncoderNVENC, EncoderNVCUDAH264, EncoderNVH264, EncoderX264, EncoderVP8:
	default:
		errs = append(errs, fmt.Errorf("-encoder %q: want auto, %s, %s, %s, %s or %s", c.Encoder,
			EncoderNVENC, EncoderNVCUDAH264, EncoderNVH264, EncoderX264, EncoderVP8))
	}
	switch c.H264Profile {
	case "auto", ProfileHigh, ProfileConstrainedBaseline:
	default:
		errs = append(errs, fmt.Errorf("-h264-profile %q: want auto, %s or %s", c.H264Profile, ProfileHigh, ProfileConstrainedBaseline))
	}
	if c.MinKbps <= 0 || c.MinKbps > c.StartKbps || c.StartKbps > c.MaxKbps {
		errs = append(errs, fmt.Errorf("bitrates: want 0 < -min-kbps (%d) <= -start-kbps (%d) <= -max-kbps (%d)", c.MinKbps, c.StartKbps, c.MaxKbps))
	}
	switch c.Gamepad {
	case GamepadAuto, GamepadUinput, GamepadKeys, GamepadOff:
	default:
		errs = append(errs, fmt.Errorf("-gamepad %q: want auto, uinput, keys or off", c.Gamepad))
	}
	if c.SessionID == "" {
		errs = append(errs, errors.New("-session is empty"))
	}
	if len(c.TokenKey) < 32 {
		errs = append(errs, fmt.Errorf("-token-key: %d bytes, want at least 32", len(c.TokenKey)))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("-idle-timeout %s is negative", c.IdleTimeout))
	}
	return errors.Join(errs...)
}
