// Package x11 talks to the X display through Xlib and XTest (cgo): it
// injects validated input, reads pointer and key state back, and draws the
// demo scene with a frame code. Validation of untrusted input happens before
// anything reaches this package.
package x11

/*
#cgo pkg-config: x11 xtst
#include <stdlib.h>
#include <X11/Xlib.h>
#include <X11/extensions/XTest.h>

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
func (x *Display) Size() (w, h int) { return x.w, x.h }

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

// Key presses or releases the key producing keysym.
func (x *Display) Key(keysym uint32, down bool) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return ErrClosed
	}
	kc := C.XKeysymToKeycode(x.d, C.KeySym(keysym))
	if kc == 0 {
		return fmt.Errorf("%w 0x%x", ErrNoKeycode, keysym)
	}
	C.XTestFakeKeyEvent(x.d, C.uint(kc), boolInt(down), C.CurrentTime)
	C.XFlush(x.d)
	return nil
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
