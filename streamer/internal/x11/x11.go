// Package x11 talks to the X display through Xlib and XTest (cgo): it
// injects validated input, reads pointer and key state back, and draws the
// demo scene with a frame code. Validation of untrusted input happens before
// anything reaches this package.
package x11

/*
#cgo pkg-config: x11 xtst
#include <stdlib.h>
#include <X11/Xlib.h>
#include <X11/XKBlib.h>
#include <X11/extensions/XTest.h>

static int metal_shift_held(Display *d) {
	Window root, child;
	int x, y, wx, wy;
	unsigned int mask = 0;
	XQueryPointer(d, DefaultRootWindow(d), &root, &child, &x, &y, &wx, &wy, &mask);
	return (mask & ShiftMask) != 0;
}

static KeySym metal_level_keysym(Display *d, KeyCode kc, int level) {
	return XkbKeycodeToKeysym(d, kc, 0, level);
}

// metal_spare_keycodes writes up to max keycodes that carry no keysym.
static int metal_spare_keycodes(Display *d, int *out, int max) {
	int min, maxk, per, n = 0;
	XDisplayKeycodes(d, &min, &maxk);
	KeySym *m = XGetKeyboardMapping(d, min, maxk - min + 1, &per);
	if (!m) return 0;
	for (int kc = maxk; kc >= min && n < max; kc--) {
		int empty = 1;
		for (int i = 0; i < per; i++) {
			if (m[(kc - min) * per + i] != NoSymbol) { empty = 0; break; }
		}
		if (empty) out[n++] = kc;
	}
	XFree(m);
	return n;
}

// metal_map_keycode makes kc produce ks at every shift level.
static void metal_map_keycode(Display *d, int kc, KeySym ks) {
	KeySym syms[4] = { ks, ks, ks, ks };
	XChangeKeyboardMapping(d, kc, 4, syms, 1);
	XSync(d, False);
}

static int metal_screen_width(Display *d) { return DisplayWidth(d, DefaultScreen(d)); }
static int metal_screen_height(Display *d) { return DisplayHeight(d, DefaultScreen(d)); }

static int metal_query_pointer(Display *d, int *x, int *y) {
	Window root, child;
	int wx, wy;
	unsigned int mask;
	return XQueryPointer(d, DefaultRootWindow(d), &root, &child, x, y, &wx, &wy, &mask);
}

static int metal_key_down(Display *d, KeyCode kc) {
	char keys[32];
	XQueryKeymap(d, keys);
	return (keys[kc / 8] >> (kc % 8)) & 1;
}

static int metal_has_xtest(Display *d) {
	int ev, err, major, minor;
	return XTestQueryExtension(d, &ev, &err, &major, &minor);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

var (
	// ErrClosed is returned for input after Close (a peer's late release
	// while the streamer shuts down).
	ErrClosed = errors.New("display closed")
	// ErrNoKeycode is returned for a keysym the keyboard map cannot produce.
	ErrNoKeycode = errors.New("no keycode for keysym")
)

// Display is one Xlib connection. Its methods are safe for concurrent use.
type Display struct {
	mu   sync.Mutex
	d    *C.Display
	w, h int
	mode C.ulong // the RandR mode Resize created and the screen is in, if any

	// Keysyms the keyboard map cannot type as asked (not on it, or at a
	// shift level the held modifiers do not select) go through spare
	// keycodes remapped on demand, least recently used first.
	spare    []C.int
	spareFor map[uint32]C.int // keysym -> spare keycode now mapped to it
	spareUse []uint32         // keysyms in spare order of use, oldest first
	down     map[uint32]C.KeyCode
}

// Open connects to display name (for example ":99").
func Open(name string) (*Display, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	d := C.XOpenDisplay(cname)
	if d == nil {
		return nil, fmt.Errorf("open X display %q", name)
	}
	if C.metal_has_xtest(d) == 0 {
		C.XCloseDisplay(d)
		return nil, fmt.Errorf("X display %q has no XTest extension", name)
	}
	return &Display{d: d, w: int(C.metal_screen_width(d)), h: int(C.metal_screen_height(d))}, nil
}

// Size is the screen size in pixels.
func (x *Display) Size() (w, h int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.w, x.h
}

// Close closes the connection.
func (x *Display) Close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d != nil {
		C.XCloseDisplay(x.d)
		x.d = nil
	}
}

// MoveTo moves the pointer to absolute screen coordinates.
func (x *Display) MoveTo(px, py int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return // closed: the streamer is shutting down
	}
	C.XTestFakeMotionEvent(x.d, -1, C.int(px), C.int(py), C.CurrentTime)
	C.XFlush(x.d)
}

// MoveBy moves the pointer relative to where it is.
func (x *Display) MoveBy(dx, dy int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return // closed: the streamer is shutting down
	}
	C.XTestFakeRelativeMotionEvent(x.d, C.int(dx), C.int(dy), C.CurrentTime)
	C.XFlush(x.d)
}

// Button presses or releases pointer button b (1 left, 2 middle, 3 right,
// 4-7 wheel).
func (x *Display) Button(b int, down bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return // closed: the streamer is shutting down
	}
	C.XTestFakeButtonEvent(x.d, C.uint(b), boolInt(down), C.CurrentTime)
	C.XFlush(x.d)
}

// Key presses or releases the key producing keysym. A keysym is typed as
// itself whatever the session's keyboard layout and the modifiers held: a
// player's layout (é, ß, @ behind AltGr) is not garbled by the session's
// US map. The key's own keycode is used when the held Shift selects the
// keysym there (so games see the real key); otherwise a spare keycode is
// remapped to the keysym at every level. A release uses the keycode its
// press used.
func (x *Display) Key(keysym uint32, down bool) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return ErrClosed
	}
	if x.down == nil {
		x.down = map[uint32]C.KeyCode{}
	}
	if !down {
		if kc, ok := x.down[keysym]; ok {
			delete(x.down, keysym)
			C.XTestFakeKeyEvent(x.d, C.uint(kc), 0, C.CurrentTime)
			C.XFlush(x.d)
			return nil
		}
	}
	kc := x.keycodeLocked(keysym)
	if kc == 0 {
		return fmt.Errorf("%w 0x%x", ErrNoKeycode, keysym)
	}
	if down {
		x.down[keysym] = kc
	}
	C.XTestFakeKeyEvent(x.d, C.uint(kc), boolInt(down), C.CurrentTime)
	C.XFlush(x.d)
	return nil
}

// keycodeLocked picks the keycode that types keysym now (see Key).
func (x *Display) keycodeLocked(keysym uint32) C.KeyCode {
	ks := C.KeySym(keysym)
	if kc := C.XKeysymToKeycode(x.d, ks); kc != 0 {
		level := C.int(0)
		if C.metal_shift_held(x.d) != 0 {
			level = 1
		}
		// Modifiers themselves, and keys whose keysym is the same on
		// both levels (Enter, F1, a spare already mapped), are typed as
		// they are.
		if C.metal_level_keysym(x.d, kc, level) == ks || C.metal_level_keysym(x.d, kc, 1-level) == C.NoSymbol || isModifier(keysym) {
			return kc
		}
	}
	return x.spareLocked(ks)
}

// spareLocked maps a spare keycode to ks (or finds the one that is).
func (x *Display) spareLocked(ks C.KeySym) C.KeyCode {
	keysym := uint32(ks)
	if kc, ok := x.spareFor[keysym]; ok {
		x.touchLocked(keysym)
		return C.KeyCode(kc)
	}
	if x.spare == nil {
		buf := make([]C.int, 16)
		n := C.metal_spare_keycodes(x.d, &buf[0], C.int(len(buf)))
		x.spare = buf[:n]
		x.spareFor = map[uint32]C.int{}
	}
	if len(x.spare) == 0 {
		return 0
	}
	var kc C.int
	if len(x.spareFor) < len(x.spare) {
		kc = x.spare[len(x.spareFor)]
	} else {
		// Reuse the least recently used spare not held down.
		for i, old := range x.spareUse {
			if _, held := x.down[old]; held {
				continue
			}
			kc = x.spareFor[old]
			delete(x.spareFor, old)
			x.spareUse = append(x.spareUse[:i], x.spareUse[i+1:]...)
			break
		}
		if kc == 0 {
			return 0 // every spare is held down
		}
	}
	C.metal_map_keycode(x.d, kc, ks)
	x.spareFor[keysym] = kc
	x.spareUse = append(x.spareUse, keysym)
	return C.KeyCode(kc)
}

func (x *Display) touchLocked(keysym uint32) {
	for i, k := range x.spareUse {
		if k == keysym {
			x.spareUse = append(append(x.spareUse[:i:i], x.spareUse[i+1:]...), keysym)
			return
		}
	}
}

// isModifier reports the modifier keysyms (Shift, Control, Caps Lock,
// Meta, Alt, Super, Hyper, ISO Level 3/5 shifts).
func isModifier(keysym uint32) bool {
	return (keysym >= 0xffe1 && keysym <= 0xffee) || keysym == 0xfe03 || keysym == 0xfe11
}

// Pointer reads the pointer position back from the server.
func (x *Display) Pointer() (px, py int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return // closed: the streamer is shutting down
	}
	var cx, cy C.int
	C.metal_query_pointer(x.d, &cx, &cy)
	return int(cx), int(cy)
}

// KeyDown reads back whether the key producing keysym is held.
func (x *Display) KeyDown(keysym uint32) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return false
	}
	kc := C.XKeysymToKeycode(x.d, C.KeySym(keysym))
	return kc != 0 && C.metal_key_down(x.d, kc) == 1
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
