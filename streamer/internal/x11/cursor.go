package x11

/*
#cgo pkg-config: x11 xfixes
#include <stdlib.h>
#include <X11/Xlib.h>
#include <X11/cursorfont.h>
#include <X11/extensions/Xfixes.h>

static int metal_xfixes_event_base(Display *d) {
	int ev, err;
	if (!XFixesQueryExtension(d, &ev, &err)) return -1;
	return ev;
}

static void metal_watch_cursor(Display *d) {
	XFixesSelectCursorInput(d, DefaultRootWindow(d), XFixesDisplayCursorNotifyMask);
	XFlush(d);
}

// metal_cursor_changed drains the queued events and reports whether one
// was a cursor change.
static int metal_cursor_changed(Display *d, int base) {
	int changed = 0;
	XEvent ev;
	while (XPending(d) > 0) {
		XNextEvent(d, &ev);
		if (ev.type == base + XFixesCursorNotify) changed = 1;
	}
	return changed;
}

// metal_cursor_rgba copies the cursor image into out (w*h*4 bytes, RGBA,
// not premultiplied) and returns 1 with its size and hotspot; 0 when there
// is none; -1 (size and hotspot set, no pixels) when it is larger than max
// pixels.
static int metal_cursor_rgba(Display *d, unsigned char *out, int max, int *w, int *h, int *hx, int *hy, unsigned long *serial) {
	XFixesCursorImage *img = XFixesGetCursorImage(d);
	if (!img) return 0;
	*w = img->width; *h = img->height; *hx = img->xhot; *hy = img->yhot; *serial = img->cursor_serial;
	if ((long)img->width * (long)img->height > max) { XFree(img); return -1; }
	for (int i = 0; i < *w * *h; i++) {
		unsigned long p = img->pixels[i]; // ARGB32, premultiplied, in a long
		unsigned int a = (p >> 24) & 0xff, r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
		if (a > 0 && a < 255) { r = r * 255 / a; g = g * 255 / a; b = b * 255 / a; }
		out[4*i] = r > 255 ? 255 : r; out[4*i+1] = g > 255 ? 255 : g; out[4*i+2] = b > 255 ? 255 : b; out[4*i+3] = a;
	}
	XFree(img);
	return 1;
}

static int metal_pointer(Display *d, int *x, int *y) {
	Window root, child;
	int wx, wy;
	unsigned int mask;
	return XQueryPointer(d, DefaultRootWindow(d), &root, &child, x, y, &wx, &wy, &mask);
}

static void metal_define_root_cursor(Display *d, unsigned int shape) {
	Cursor c = XCreateFontCursor(d, shape);
	XDefineCursor(d, DefaultRootWindow(d), c);
	XFreeCursor(d, c);
	XFlush(d);
}

static void metal_blank_root_cursor(Display *d) {
	char zero = 0;
	XColor black = {0};
	Pixmap p = XCreateBitmapFromData(d, DefaultRootWindow(d), &zero, 1, 1);
	Cursor c = XCreatePixmapCursor(d, p, p, &black, &black, 0, 0);
	XDefineCursor(d, DefaultRootWindow(d), c);
	XFreeCursor(d, c);
	XFreePixmap(d, p);
	XFlush(d);
}
*/
import "C"

import (
	"context"
	"fmt"
	"time"
	"unsafe"
)

// Cursor is the X pointer's image: RGBA (not premultiplied), its size and
// hotspot. Hidden is true when every pixel is transparent (an application
// hiding the pointer defines such a cursor); RGBA is nil when the image is
// larger than maxCursorPixels (the player then draws its default pointer).
type Cursor struct {
	Width, Height int
	HotX, HotY    int
	Serial        uint64
	RGBA          []byte
	Hidden        bool
}

// maxCursorPixels bounds the images read (X allows large cursors; browsers
// draw at most 128×128).
const maxCursorPixels = 256 * 256

// cursorPoll is how often queued cursor events are read: a change reaches
// the player within this, at input latency rather than video latency.
const cursorPoll = 8 * time.Millisecond

// WatchCursor calls onChange with the display's cursor, then again each
// time XFixes reports it changed, and onMove with the pointer's position
// each time it moved, until ctx ends. It uses its own connection, opened
// before it returns: an error means the display has no XFIXES (and the
// capture should draw the pointer itself).
//
// The pointer's position costs a round trip to the X server per poll, so
// it is asked only while wantMoves reports true (a spectator is
// connected); when it turns true the current position is reported at once.
func WatchCursor(ctx context.Context, name string, onChange func(Cursor), onMove func(x, y int), wantMoves func() bool) (wait func(), err error) {
	d, base, err := openXFixes(name)
	if err != nil {
		return nil, err
	}
	C.metal_watch_cursor(d)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer C.XCloseDisplay(d)
		buf := (*C.uchar)(C.malloc(C.size_t(maxCursorPixels * 4)))
		defer C.free(unsafe.Pointer(buf))
		read := func() {
			var w, h, hx, hy C.int
			var serial C.ulong
			got := C.metal_cursor_rgba(d, buf, maxCursorPixels, &w, &h, &hx, &hy, &serial)
			if got == 0 {
				return
			}
			c := Cursor{Width: int(w), Height: int(h), HotX: int(hx), HotY: int(hy), Serial: uint64(serial)}
			if got < 0 {
				onChange(c)
				return
			}
			c.RGBA = C.GoBytes(unsafe.Pointer(buf), w*h*4)
			c.Hidden = true
			for i := 3; i < len(c.RGBA); i += 4 {
				if c.RGBA[i] != 0 {
					c.Hidden = false
					break
				}
			}
			onChange(c)
		}
		read()
		t := time.NewTicker(cursorPoll)
		defer t.Stop()
		lastX, lastY := C.int(-1), C.int(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if C.metal_cursor_changed(d, base) != 0 {
					read()
				}
				if !wantMoves() {
					lastX, lastY = -1, -1 // report the position at once when asked again
					continue
				}
				var x, y C.int
				if C.metal_pointer(d, &x, &y) != 0 && (x != lastX || y != lastY) {
					lastX, lastY = x, y
					onMove(int(x), int(y))
				}
			}
		}
	}()
	return func() { <-done }, nil
}

// openXFixes opens a connection of its own to display name, for a watcher
// of XFixes events, and returns it with XFIXES' event base.
func openXFixes(name string) (*C.Display, C.int, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	d := C.XOpenDisplay(cname)
	if d == nil {
		return nil, 0, fmt.Errorf("open X display %q", name)
	}
	base := C.metal_xfixes_event_base(d)
	if base < 0 {
		C.XCloseDisplay(d)
		return nil, 0, fmt.Errorf("X display %q has no XFIXES extension", name)
	}
	return d, base, nil
}

// DefineRootCursor sets the root window's cursor to a cursor-font shape
// (X11/cursorfont.h: 34 is XC_crosshair): what a desktop does, and how
// tests change the cursor.
func (x *Display) DefineRootCursor(shape uint) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d != nil {
		C.metal_define_root_cursor(x.d, C.uint(shape))
	}
}

// BlankRootCursor sets a fully transparent root cursor: how applications
// (games, video players) hide the pointer.
func (x *Display) BlankRootCursor() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d != nil {
		C.metal_blank_root_cursor(x.d)
	}
}
