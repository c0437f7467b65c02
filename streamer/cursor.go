package streamer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"

	"github.com/pion/webrtc/v4"

	"github.com/metal-stream/metal/streamer/internal/x11"
)

// The pointer is drawn by the browser, not captured: the streamer reads
// the X cursor's image and hotspot (XFixes) and sends them on every peer's
// input channel whenever they change, and once when the channel opens. The
// player sets them as the video element's CSS cursor, so the pointer moves
// at input latency (the browser's own) instead of video latency, and the
// capture excludes it (ximagesrc show-pointer=false).

// cursorMessage is the X cursor as the player draws it.
type cursorMessage struct {
	Type   string `json:"type"`            // "cursor"
	Image  string `json:"image,omitempty"` // PNG data URL; empty when hidden
	HotX   int    `json:"hot_x"`
	HotY   int    `json:"hot_y"`
	Hidden bool   `json:"hidden"` // the application hid the pointer
	Serial uint64 `json:"serial"`
}

// encodeCursor is c as a cursor message.
func encodeCursor(c x11.Cursor) ([]byte, error) {
	m := cursorMessage{Type: "cursor", HotX: c.HotX, HotY: c.HotY, Hidden: c.Hidden, Serial: c.Serial}
	if !c.Hidden {
		img := &image.NRGBA{Pix: c.RGBA, Stride: 4 * c.Width, Rect: image.Rect(0, 0, c.Width, c.Height)}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return nil, err
		}
		m.Image = "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	return json.Marshal(m)
}

// setCursor keeps the cursor for peers that connect later and sends it to
// every peer whose input channel is open.
func (s *Server) setCursor(c x11.Cursor) {
	b, err := encodeCursor(c)
	if err != nil {
		s.log.Warn("cursor image not encoded", "err", err)
		return
	}
	s.mu.Lock()
	s.cursor = b
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, p := range peers {
		p.sendText(b)
	}
}

// sendText sends on the peer's input channel, if it is open.
func (p *peer) sendText(b []byte) {
	p.inputMu.Lock()
	dc := p.inputDC
	p.inputMu.Unlock()
	if dc != nil && dc.ReadyState() == webrtc.DataChannelStateOpen {
		_ = dc.SendText(string(b))
	}
}
