package x11

/*
#include <X11/Xlib.h>
#include <X11/Xutil.h>

// metal_grab_green copies the green channel of a w x h rectangle of the
// root window into out (w*h bytes); 0 if the server refused the read.
static int metal_grab_green(Display *d, int x, int y, int w, int h, unsigned char *out) {
	XImage *img = XGetImage(d, DefaultRootWindow(d), x, y, w, h, AllPlanes, ZPixmap);
	if (img == NULL) return 0;
	unsigned long gm = img->green_mask;
	int shift = 0;
	while (gm && !(gm & 1)) { gm >>= 1; shift++; }
	for (int j = 0; j < h; j++)
		for (int i = 0; i < w; i++)
			out[j * w + i] = (unsigned char)((XGetPixel(img, i, j) >> shift) & 0xff);
	XDestroyImage(img);
	return 1;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Grab reads the green channel of the w x h rectangle at (x0, y0) of the
// screen, row by row, one byte per pixel: what a camera pointed at this
// display would see, for reading a frame code back (benchmarks).
func (x *Display) Grab(x0, y0, w, h int) ([]byte, error) {
	if w <= 0 || h <= 0 || x0 < 0 || y0 < 0 || x0+w > x.w || y0+h > x.h {
		return nil, fmt.Errorf("grab %dx%d at %d,%d: outside the %dx%d screen", w, h, x0, y0, x.w, x.h)
	}
	out := make([]byte, w*h)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return nil, ErrClosed
	}
	if C.metal_grab_green(x.d, C.int(x0), C.int(y0), C.int(w), C.int(h), (*C.uchar)(unsafe.Pointer(&out[0]))) == 0 {
		return nil, fmt.Errorf("grab %dx%d at %d,%d: XGetImage failed", w, h, x0, y0)
	}
	return out, nil
}

// ReadFrameCode reads a frame code DrawFrameCode drew, as it now shows on
// this screen with its top-left corner at (x0, y0) (the code may have been
// drawn on another display and streamed here): the middle of each cell,
// white or black.
func (x *Display) ReadFrameCode(x0, y0 int) (uint16, error) {
	row, err := x.Grab(x0, y0+FrameCodeCell/2, FrameCodeBits*FrameCodeCell, 1)
	if err != nil {
		return 0, err
	}
	return FrameCodeFromRow(row), nil
}

// FrameCodeFromRow reads a frame code from a row of green values through
// the middle of its cells, starting at the code's left edge.
func FrameCodeFromRow(row []byte) uint16 {
	var code uint16
	for i := range FrameCodeBits {
		code <<= 1
		if row[i*FrameCodeCell+FrameCodeCell/2] > 128 {
			code |= 1
		}
	}
	return code
}
