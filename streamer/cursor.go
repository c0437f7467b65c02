package streamer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"

	"github.com/pion/webrtc/v4"

	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

// The pointer is drawn by the browser, not captured: the streamer reads
// the X cursor's image and hotspot (XFixes) and sends them on every peer's
// input channel whenever they change, and once when the channel opens. The
// player sets them as the video element's CSS cursor, so the pointer moves
// at input latency (the browser's own) instead of video latency, and the
// capture excludes it (ximagesrc show-pointer=false). Spectators, whose
// own mouse moves nothing on the desktop, also get the pointer's position
// and draw the image there.

// cursorMessage is the X cursor as the player draws it.
type cursorMessage struct {
	Type string `json:"type"` // "cursor"
	// Image is a PNG data URL; empty when hidden, or when X's image is too
	// large (the player draws its default pointer).
	Image  string `json:"image,omitempty"`
	HotX   int    `json:"hot_x"`
	HotY   int    `json:"hot_y"`
	Hidden bool   `json:"hidden"` // the application hid the pointer
	// Seq orders the messages (the one sent when a channel opens may cross
	// a newer one): the player ignores one older than it has drawn.
	Seq uint64 `json:"seq"`
}

// pointerMessage is where the pointer is, as a fraction of the screen, for
// spectators.
type pointerMessage struct {
	Type string  `json:"type"` // "pointer"
	X    float64 `json:"x"`
	Y    float64 `json:"y"`
}

// maxBuffered is how much may wait in a peer's channel before cursor and
// pointer messages to it are skipped (an animated cursor, a slow link).
const maxBuffered = 256 << 10

// encodeCursor is c as cursor message number seq.
func encodeCursor(c x11.Cursor, seq uint64) ([]byte, error) {
	m := cursorMessage{Type: "cursor", HotX: c.HotX, HotY: c.HotY, Hidden: c.Hidden, Seq: seq}
	if !c.Hidden && c.RGBA != nil {
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
	s.mu.Lock()
	s.cursorSeq++
	seq := s.cursorSeq
	s.mu.Unlock()
	b, err := encodeCursor(c, seq)
	if err != nil {
		s.log.Warn("cursor image not encoded", "err", err)
		return
	}
	s.mu.Lock()
	if seq < s.cursorSeq {
		s.mu.Unlock()
		return // a newer one is on its way (setCursor has one caller; all the same)
	}
	s.cursor = b
	s.mu.Unlock()
	for _, p := range s.peersWhere(func(*peer) bool { return true }) {
		p.sendCursor(b)
	}
}

// movePointer sends the pointer's position to every spectator, and keeps it
// for those who join later.
func (s *Server) movePointer(x, y int) {
	w, h := s.screenSize()
	b, _ := json.Marshal(pointerMessage{Type: "pointer", X: float64(x) / float64(w), Y: float64(y) / float64(h)})
	s.mu.Lock()
	s.pointer = b
	s.mu.Unlock()
	for _, p := range s.peersWhere(func(p *peer) bool { return p.role != token.RoleOwner }) {
		if dc := p.openInput(); dc != nil && dc.BufferedAmount() < maxBuffered {
			_ = dc.SendText(string(b)) // the next move replaces a skipped one
		}
	}
}

// hasSpectators reports whether a spectator is connected (pointer
// positions are read only for them).
func (s *Server) hasSpectators() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, viewers := s.countLocked()
	return viewers > 0
}

// greet sends a peer whose input channel just opened the screen's size,
// the cursor and, to a spectator, where the pointer is.
func (s *Server) greet(p *peer) {
	s.mu.Lock()
	cursor, pointer := s.cursor, s.pointer
	s.mu.Unlock()
	if dc := p.openInput(); dc != nil {
		_ = dc.SendText(string(s.screenFor(p)))
	}
	if cursor != nil {
		p.sendCursor(cursor)
	}
	if dc := p.openInput(); dc != nil && pointer != nil && p.role != token.RoleOwner {
		_ = dc.SendText(string(pointer))
	}
}

// peersWhere lists the peers keep accepts.
func (s *Server) peersWhere(keep func(*peer) bool) []*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*peer
	for _, p := range s.peers {
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// openInput is the peer's input channel if it is open.
func (p *peer) openInput() *webrtc.DataChannel {
	p.inputMu.Lock()
	dc := p.inputDC
	p.inputMu.Unlock()
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return nil
	}
	return dc
}

// sendCursor sends a cursor message, or, when the channel is backed up (an
// animated cursor, a slow link), keeps it as the one to send once the
// channel drains (inputDrained): a cursor change is never lost, only
// superseded.
func (p *peer) sendCursor(b []byte) {
	dc := p.openInput()
	if dc == nil {
		return
	}
	if dc.BufferedAmount() >= maxBuffered {
		p.inputMu.Lock()
		p.cursorBehind = b
		p.inputMu.Unlock()
		return
	}
	_ = dc.SendText(string(b))
}

// inputDrained sends the cursor a backed-up channel skipped.
func (p *peer) inputDrained() {
	p.inputMu.Lock()
	b := p.cursorBehind
	p.cursorBehind = nil
	p.inputMu.Unlock()
	if b != nil {
		p.sendCursor(b)
	}
}
