//go:build cgo

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/metal-stream/metal/internal/flagenv"
	"github.com/metal-stream/metal/streamer"
)

func runStreamer(ctx context.Context, log *slog.Logger, args []string) error {
	cfg := streamer.DefaultConfig()
	fs := flag.NewFlagSet("streamer", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP address for WHEP, /healthz, /metrics and the player page")
	fs.IntVar(&cfg.ICEPort, "ice-port", cfg.ICEPort, "the one UDP port for all WebRTC traffic")
	publicIPs := fs.String("public-ip", "", "comma-separated addresses advertised in ICE candidates instead of local ones")
	fs.BoolVar(&cfg.Loopback, "loopback", cfg.Loopback, "offer 127.0.0.1 candidates (same-machine browsers and tests)")
	ifaces := fs.String("ice-interfaces", "", "comma-separated interfaces to gather candidates on (default all)")
	fs.StringVar(&cfg.Display, "display", cfg.Display, "X display to capture (empty starts Xvfb at -resolution)")
	res := fs.String("resolution", fmt.Sprintf("%dx%d", cfg.Width, cfg.Height), "screen, capture and encode size, WIDTHxHEIGHT (1280x720 or 1920x1080): the largest the owner's window can make it")
	fs.BoolVar(&cfg.FixedResolution, "fixed-resolution", cfg.FixedResolution, "keep the screen at -resolution instead of following the owner's window (always so with -demo or -display)")
	fs.IntVar(&cfg.FPS, "fps", cfg.FPS, "frames per second (30 or 60)")
	fs.StringVar(&cfg.Encoder, "encoder", cfg.Encoder, "video encoder: auto (NVENC, then x264enc, then vp8enc), nvenc (NVENC or fail), nvcudah264enc, nvh264enc, x264enc or vp8enc")
	fs.BoolVar(&cfg.RemoteCursor, "remote-cursor", cfg.RemoteCursor, "send the X cursor to players, who draw it at input latency, and keep it out of the capture")
	fs.StringVar(&cfg.H264Profile, "h264-profile", cfg.H264Profile, "H.264 profile: auto (high on NVENC, constrained-baseline on x264), high or constrained-baseline")
	fs.IntVar(&cfg.StartKbps, "start-kbps", cfg.StartKbps, "initial video bitrate, kbit/s")
	fs.IntVar(&cfg.MinKbps, "min-kbps", cfg.MinKbps, "lowest bitrate congestion control may choose, kbit/s")
	fs.IntVar(&cfg.MaxKbps, "max-kbps", cfg.MaxKbps, "highest bitrate congestion control may choose, kbit/s")
	fs.BoolVar(&cfg.Audio, "audio", cfg.Audio, "stream audio from a PulseAudio null sink")
	fs.BoolVar(&cfg.Demo, "demo", cfg.Demo, "draw a moving demo scene and play a tone")
	fs.StringVar(&cfg.Desktop, "desktop", cfg.Desktop, "shell command started on the display once it is up, ended with the streamer: the session's desktop (for example \"openbox --startup xterm\")")
	fs.StringVar(&cfg.Gamepad, "gamepad", cfg.Gamepad, "the player's gamepads in the session: auto (uinput where /dev/uinput is writable, otherwise keys), uinput (virtual Xbox 360 controllers), keys (arrows, Return, Escape, space, Tab through XTest) or off")
	fs.StringVar(&cfg.SessionID, "session", cfg.SessionID, "session id this streamer serves")
	key := fs.String("token-key", "", "session-token signing key, at least 32 bytes (default: random, printed link only)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "exit 0 after this long without the owner connected (0: never)")
	fs.BoolVar(&cfg.SingleUseTokens, "single-use-tokens", cfg.SingleUseTokens, "accept only single-use session tokens (a gateway-run streamer)")
	fs.BoolVar(&cfg.PlayoutDelayZero, "playout-delay-zero", cfg.PlayoutDelayZero, "ask the browser to render without buffering (playout-delay 0)")
	flagenv.Usage(fs, "metal streamer [flags]")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	if _, err := fmt.Sscanf(*res, "%dx%d", &cfg.Width, &cfg.Height); err != nil {
		return fmt.Errorf("-resolution %q: want WIDTHxHEIGHT", *res)
	}
	cfg.PublicIPs = splitList(*publicIPs)
	cfg.ICEInterfaces = splitList(*ifaces)
	printLink := *key == ""
	if printLink {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		*key = hex.EncodeToString(b)
	}
	cfg.TokenKey = []byte(*key)

	s, err := streamer.New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Listen(); err != nil {
		return err
	}
	if printLink {
		link, err := s.OwnerURL(12 * time.Hour)
		if err != nil {
			return err
		}
		fmt.Println(link)
	}
	return s.Run(ctx)
}
