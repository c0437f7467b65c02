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

// FrameCodeBits is how many bits of the frame counter DrawFrameCode draws.
const FrameCodeBits = 16

// FrameCodeCell is the side of one frame-code cell in pixels; large enough
// to survive chroma subsampling and a low-bitrate encode.
const FrameCodeCell = 16

// DrawFrameCode draws n as a row of FrameCodeBits black/white cells at the
// top-left of the screen (most significant bit first), on a grey guard row.
func (x *Display) DrawFrameCode(n uint32) {
	x.mu.Lock()
	defer x.mu.Unlock()
	black, white := C.metal_black(x.d), C.metal_white(x.d)
	for i := 0; i < FrameCodeBits; i++ {
		px := black
		if n&(1<<(FrameCodeBits-1-i)) != 0 {
			px = white
		}
		C.metal_rect(x.d, px, C.int(i*FrameCodeCell), 0, FrameCodeCell, FrameCodeCell)
	}
	// XSync, not XFlush: the code is on the screen when this returns, so the
	// caller's timestamp is when the frame became capturable.
	C.XSync(x.d, 0)
}

// RunDemo draws a moving box and the frame code on the root window at fps
// until ctx ends, so that a new user sees motion. onFrame, when set, is called
// with each frame code once it is on the screen. It returns the frame count.
func (x *Display) RunDemo(ctx context.Context, fps int, onFrame func(n uint32)) uint32 {
	if fps <= 0 {
		fps = 30
	}
	t := time.NewTicker(time.Second / time.Duration(fps))
	defer t.Stop()
	var n uint32
	box := 80
	lastX := -1
	for {
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
		n++
		x.mu.Lock()
		black, white := C.metal_black(x.d), C.metal_white(x.d)
		span := x.w - box
		pos := int(n*8) % (2 * span)
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
		x.DrawFrameCode(n)
		if onFrame != nil {
			onFrame(n)
		}
	}
}
