package streamer

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/metal-stream/metal/streamer/internal/uinput"
)

// The owner's gamepads reach the session. The player reads the browser's
// Gamepad API at the display rate and sends each pad's state when it
// changes ("pad" on the input channel: buttons 0..1 and axes -1..1 in the
// W3C standard layout). In the session each pad becomes:
//
//   - with /dev/uinput writable (-gamepad uinput, or auto): a virtual Xbox
//     360 controller, what SDL, Steam and evdev games read as a joystick;
//   - otherwise (-gamepad keys, or auto without uinput): keys through XTest,
//     for keyboard-driven games and menus: the D-pad and left stick are the
//     arrow keys, A Return, B Escape, X space, Y Tab, Start Return, Back
//     Escape.
//
// What the pads hold is let go when the owner's peer that sent them goes
// away (not when an older one of a reconnect does), and by the page when
// it loses focus or is hidden.

// Gamepad modes (-gamepad).
const (
	GamepadAuto   = "auto"
	GamepadUinput = "uinput"
	GamepadKeys   = "keys"
	GamepadOff    = "off"
)

// maxPads is how many pads a player may use at once (the Gamepad API's
// usual four slots).
const maxPads = 4

// padSink is where the pads go in the session.
type padSink interface {
	Set(index int, buttons, axes []float64) error
	// Reset lets go of every button and centres every axis.
	Reset()
	Close()
	Mode() string
}

// newPadSink picks the sink for mode.
func newPadSink(mode, session string, inj Injector, log *slog.Logger) (padSink, error) {
	switch mode {
	case GamepadOff:
		return nil, nil
	case GamepadKeys:
		return &keyPads{inj: inj}, nil
	}
	f, err := os.OpenFile(uinput.Path, os.O_WRONLY, 0)
	if err != nil {
		if mode == GamepadUinput {
			return nil, fmt.Errorf("-gamepad uinput: %w (give the job /dev/uinput, or use -gamepad keys)", err)
		}
		log.Info("gamepads are keys: no uinput", "err", err)
		return &keyPads{inj: inj}, nil
	}
	f.Close()
	return &uinputPads{name: "Metal gamepad (" + session + ")"}, nil
}

// uinputPads makes one virtual controller per pad, on its first message.
type uinputPads struct {
	name string
	mu   sync.Mutex
	pads [maxPads]*uinput.Pad
	// failed is the last failure to make a device, not tried again
	// before failedAt + uinputRetry (a message per frame would).
	failed   error
	failedAt time.Time
}

// uinputRetry is how long a failure to make a device is answered as it is.
const uinputRetry = 10 * time.Second

func (u *uinputPads) Mode() string { return GamepadUinput }

func (u *uinputPads) Set(index int, buttons, axes []float64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pads[index] == nil {
		if len(buttons) == 0 && len(axes) == 0 {
			return nil // a pad let go of or gone: no device made for it
		}
		if u.failed != nil && time.Since(u.failedAt) < uinputRetry {
			return u.failed
		}
		p, err := uinput.Create(fmt.Sprintf("%s %d", u.name, index+1))
		if err != nil {
			u.failed, u.failedAt = err, time.Now()
			return err
		}
		u.failed = nil
		u.pads[index] = p
	}
	return u.pads[index].Set(buttons, axes)
}

func (u *uinputPads) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range u.pads {
		if p != nil {
			_ = p.Set(nil, nil)
		}
	}
}

func (u *uinputPads) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, p := range u.pads {
		if p != nil {
			p.Close()
			u.pads[i] = nil
		}
	}
}

// keyPads types the pads as keys.
type keyPads struct {
	inj  Injector
	mu   sync.Mutex
	held [maxPads]map[uint32]bool
}

func (k *keyPads) Mode() string { return GamepadKeys }

// padKeys are the keys a pad's state holds down.
func padKeys(buttons, axes []float64) map[uint32]bool {
	b := func(i int) bool { return i < len(buttons) && buttons[i] > 0.5 }
	a := func(i int) float64 {
		if i < len(axes) {
			return axes[i]
		}
		return 0
	}
	keys := map[uint32]bool{}
	set := func(k uint32, on bool) {
		if on {
			keys[k] = true
		}
	}
	set(0xff52, b(12) || a(1) < -0.5) // Up
	set(0xff54, b(13) || a(1) > 0.5)  // Down
	set(0xff51, b(14) || a(0) < -0.5) // Left
	set(0xff53, b(15) || a(0) > 0.5)  // Right
	set(0xff0d, b(0) || b(9))         // A, Start: Return
	set(0xff1b, b(1) || b(8))         // B, Back: Escape
	set(0x0020, b(2))                 // X: space
	set(0xff09, b(3))                 // Y: Tab
	return keys
}

func (k *keyPads) Set(index int, buttons, axes []float64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	want := padKeys(buttons, axes)
	var first error
	for key := range k.held[index] {
		if !want[key] {
			if err := k.inj.Key(key, false); err != nil && first == nil {
				first = err
			}
		}
	}
	for key := range want {
		if !k.held[index][key] {
			if err := k.inj.Key(key, true); err != nil && first == nil {
				first = err
			}
		}
	}
	k.held[index] = want
	return first
}

func (k *keyPads) Reset() {
	for i := range maxPads {
		_ = k.Set(i, nil, nil)
	}
}

func (k *keyPads) Close() { k.Reset() }
