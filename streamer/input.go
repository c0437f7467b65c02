package streamer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/metal-stream/metal/streamer/internal/uinput"
)

// MaxInputMessage is the largest data-channel message accepted, in bytes.
const MaxInputMessage = 256

// Injector is what input needs from the display.
type Injector interface {
	MoveTo(x, y int)
	MoveBy(dx, dy int)
	Button(b int, down bool)
	Key(keysym uint32, down bool) error
}

// InputMessage is one message on the "input" data channel, JSON encoded:
//
//	{"type":"key","keysym":97,"down":true}
//	{"type":"button","button":1,"down":false}       1 left, 2 middle, 3 right
//	{"type":"move","x":0.5,"y":0.25}                absolute, 0..1 of the screen
//	{"type":"rel","dx":-3,"dy":7}                   relative (pointer lock)
//	{"type":"wheel","dx":0,"dy":-1}                 wheel steps
//	{"type":"resize","width":1366,"height":768}     the window's size, device pixels (resize.go)
//	{"type":"pad","index":0,"buttons":[1,0],"axes":[0.5,0]}  a gamepad's state (gamepad.go)
type InputMessage struct {
	Type   string   `json:"type"`
	Keysym *uint32  `json:"keysym,omitempty"`
	Down   *bool    `json:"down,omitempty"`
	Button *int     `json:"button,omitempty"`
	X      *float64 `json:"x,omitempty"`
	Y      *float64 `json:"y,omitempty"`
	DX     *int     `json:"dx,omitempty"`
	DY     *int     `json:"dy,omitempty"`
	Width  *int     `json:"width,omitempty"`
	Height *int     `json:"height,omitempty"`
	// Index, Buttons (0..1) and Axes (-1..1) are a gamepad's, in the
	// W3C standard layout.
	Index   *int      `json:"index,omitempty"`
	Buttons []float64 `json:"buttons,omitempty"`
	Axes    []float64 `json:"axes,omitempty"`
}

const (
	maxKeysym   = 0x1ffffff // X keysyms, including the Unicode range 0x1000000+
	maxRelDelta = 4096
	maxWheel    = 16
	maxWindow   = 16384 // device pixels a side; fitSize brings it within bounds
)

// ParseInput decodes and validates one data-channel message. Every error
// wraps ErrBadInput and says what is wrong.
func ParseInput(b []byte) (InputMessage, error) {
	var m InputMessage
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrBadInput)
	}
	if len(b) > MaxInputMessage {
		return m, fmt.Errorf("%w: %d bytes, limit %d", ErrBadInput, len(b), MaxInputMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return InputMessage{}, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	if dec.More() {
		return InputMessage{}, fmt.Errorf("%w: trailing data", ErrBadInput)
	}
	if err := m.validate(); err != nil {
		return InputMessage{}, fmt.Errorf("%w: %s: %v", ErrBadInput, m.Type, err)
	}
	return m, nil
}

func (m InputMessage) validate() error {
	only := func(allowed ...string) error {
		present := map[string]bool{
			"keysym": m.Keysym != nil, "down": m.Down != nil, "button": m.Button != nil,
			"x": m.X != nil, "y": m.Y != nil, "dx": m.DX != nil, "dy": m.DY != nil,
			"width": m.Width != nil, "height": m.Height != nil,
			"index": m.Index != nil, "buttons": m.Buttons != nil, "axes": m.Axes != nil,
		}
		for _, a := range allowed {
			if !present[a] {
				return fmt.Errorf("missing %q", a)
			}
			delete(present, a)
		}
		for k, v := range present {
			if v {
				return fmt.Errorf("unexpected %q", k)
			}
		}
		return nil
	}
	switch m.Type {
	case "key":
		if err := only("keysym", "down"); err != nil {
			return err
		}
		if *m.Keysym == 0 || *m.Keysym > maxKeysym {
			return fmt.Errorf("keysym 0x%x out of range", *m.Keysym)
		}
	case "button":
		if err := only("button", "down"); err != nil {
			return err
		}
		if *m.Button < 1 || *m.Button > 3 {
			return fmt.Errorf("button %d not 1, 2 or 3 (use wheel for scrolling)", *m.Button)
		}
	case "move":
		if err := only("x", "y"); err != nil {
			return err
		}
		for _, v := range []float64{*m.X, *m.Y} {
			if math.IsNaN(v) || v < 0 || v > 1 {
				return fmt.Errorf("coordinate %v outside 0..1", v)
			}
		}
	case "rel":
		if err := only("dx", "dy"); err != nil {
			return err
		}
		if abs(*m.DX) > maxRelDelta || abs(*m.DY) > maxRelDelta {
			return fmt.Errorf("delta beyond ±%d", maxRelDelta)
		}
	case "wheel":
		if err := only("dx", "dy"); err != nil {
			return err
		}
		if abs(*m.DX) > maxWheel || abs(*m.DY) > maxWheel {
			return fmt.Errorf("wheel steps beyond ±%d", maxWheel)
		}
	case "resize":
		if err := only("width", "height"); err != nil {
			return err
		}
		if *m.Width < 1 || *m.Height < 1 || *m.Width > maxWindow || *m.Height > maxWindow {
			return fmt.Errorf("window %dx%d outside 1..%d a side", *m.Width, *m.Height, maxWindow)
		}
	case "pad":
		if err := only("index", "buttons", "axes"); err != nil {
			return err
		}
		if *m.Index < 0 || *m.Index >= maxPads {
			return fmt.Errorf("pad %d not 0..%d", *m.Index, maxPads-1)
		}
		if len(m.Buttons) > uinput.Buttons || len(m.Axes) > uinput.Axes {
			return fmt.Errorf("%d buttons and %d axes, at most %d and %d", len(m.Buttons), len(m.Axes), uinput.Buttons, uinput.Axes)
		}
		for _, v := range m.Buttons {
			if math.IsNaN(v) || v < 0 || v > 1 {
				return fmt.Errorf("button value %v outside 0..1", v)
			}
		}
		for _, v := range m.Axes {
			if math.IsNaN(v) || v < -1 || v > 1 {
				return fmt.Errorf("axis value %v outside -1..1", v)
			}
		}
	case "":
		return fmt.Errorf("missing \"type\"")
	default:
		return fmt.Errorf("unknown type")
	}
	return nil
}

// Apply injects a validated message into a screen of the given size.
func (m InputMessage) Apply(inj Injector, width, height int) error {
	switch m.Type {
	case "key":
		return inj.Key(*m.Keysym, *m.Down)
	case "button":
		inj.Button(*m.Button, *m.Down)
	case "move":
		inj.MoveTo(scale(*m.X, width), scale(*m.Y, height))
	case "rel":
		inj.MoveBy(*m.DX, *m.DY)
	case "wheel":
		click := func(button, n int) {
			for range n {
				inj.Button(button, true)
				inj.Button(button, false)
			}
		}
		// X buttons 4/5 scroll up/down, 6/7 left/right.
		if *m.DY < 0 {
			click(4, -*m.DY)
		} else {
			click(5, *m.DY)
		}
		if *m.DX < 0 {
			click(6, -*m.DX)
		} else {
			click(7, *m.DX)
		}
	}
	return nil
}

func scale(v float64, size int) int {
	p := int(math.Round(v * float64(size-1)))
	return max(0, min(size-1, p))
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
