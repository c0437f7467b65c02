package x11

/*
#include <X11/Xlib.h>
static unsigned long metal_black(Display *d) { return BlackPixel(d, DefaultScreen(d)); }
static unsigned long metal_white(Display *d) { return WhitePixel(d, DefaultScreen(d)); }

static void metal_rect(Display *d, unsigned long px, int x, int y, int w, int h) {
	GC gc = DefaultGC(d, DefaultScreen(d));
	XSetForeground(d, gc, px);
	XFillRectangle(d, DefaultRootWindow(d), gc, x, y, w, h);
}
*/
import "C"

import (
	"context"
	"time"
)

// FrameCodeBits is how many cells DrawFrameCode draws.
const FrameCodeBits = 16

// FrameCodeCell is the side of one frame-code cell in pixels; large enough
// to survive chroma subsampling and a low-bitrate encode.
const FrameCodeCell = 16

// DrawFrameCode draws pattern as a row of FrameCodeBits black/white cells
// at the top-left of the screen (most significant bit first).
func (x *Display) DrawFrameCode(pattern uint16) {
	x.mu.Lock()
	defer x.mu.Unlock()
	black, white := C.metal_black(x.d), C.metal_white(x.d)
	for i := 0; i < FrameCodeBits; i++ {
		px := black
		if pattern&(1<<(FrameCodeBits-1-i)) != 0 {
			px = white
		}
		C.metal_rect(x.d, px, C.int(i*FrameCodeCell), 0, FrameCodeCell, FrameCodeCell)
	}
	// XSync, not XFlush: the code is on the screen when this returns, so the
	// caller's timestamp is when the frame became capturable.
	C.XSync(x.d, 0)
}

// RunDemo draws a moving box at fps and a stamp stampsPerFrame times per
// frame period on the root window until ctx ends, so that a new user sees
// motion and glass-to-glass can be read back. Stamp n is drawn as
// pattern(n); onStamp, when set, is called with n once it is on the screen.
// It returns the stamp count.
func (x *Display) RunDemo(ctx context.Context, fps, stampsPerFrame int, pattern func(n uint32) uint16, onStamp func(n uint32)) uint32 {
	if fps <= 0 {
		fps = 30
	}
	stampsPerFrame = max(1, stampsPerFrame)
	t := time.NewTicker(time.Second / time.Duration(fps*stampsPerFrame))
	defer t.Stop()
	var n, frame uint32
	box := 80
	lastX := -1
	for {
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
		n++
		if n%uint32(stampsPerFrame) == 0 {
			frame++
			x.mu.Lock()
			black, white := C.metal_black(x.d), C.metal_white(x.d)
			span := x.w - box
			pos := int(frame*8) % (2 * span)
			if pos > span {
				pos = 2*span - pos
			}
			y := x.h/2 - box/2
			if lastX >= 0 {
				C.metal_rect(x.d, black, C.int(lastX), C.int(y), C.int(box), C.int(box))
			}
			C.metal_rect(x.d, white, C.int(pos), C.int(y), C.int(box), C.int(box))
			lastX = pos
			x.mu.Unlock()
		}
		x.DrawFrameCode(pattern(n))
		if onStamp != nil {
			onStamp(n)
		}
	}
}
