package x11

/*
#cgo pkg-config: x11 xrandr
#include <stdio.h>
#include <string.h>
#include <X11/Xlib.h>
#include <X11/extensions/Xrandr.h>

// Xlib's error handler is the process's, for every connection: while a
// resize runs (one at a time: randrMu), errors of its own connection are
// recorded, and any other connection's go to the handler that was there.
static Display *metal_randr_display;
static XErrorHandler metal_randr_previous;
static int metal_randr_error;
static int metal_randr_on_error(Display *d, XErrorEvent *e) {
	if (d != metal_randr_display) return metal_randr_previous ? metal_randr_previous(d, e) : 0;
	metal_randr_error = e->error_code;
	return 0;
}
static void metal_randr_catch(Display *d) {
	metal_randr_display = d;
	metal_randr_error = 0;
	metal_randr_previous = XSetErrorHandler(metal_randr_on_error);
}
static void metal_randr_release(void) {
	XSetErrorHandler(metal_randr_previous);
	metal_randr_display = NULL;
}

// metal_randr_size sets the screen to w x h through RandR 1.2: the first
// output's CRTC is switched off, the screen resized and the CRTC set to a
// mode of that size (created where the server has none; *created says
// which, so the caller can destroy the one it replaces). Returns 0, or the
// X error code, or -1 when the server has no output or CRTC.
static int metal_randr_size(Display *d, int w, int h, unsigned long *mode_out, int *created) {
	Window root = DefaultRootWindow(d);
	XRRScreenResources *res = XRRGetScreenResources(d, root);
	if (!res) return -1;
	if (res->noutput < 1 || res->ncrtc < 1) { XRRFreeScreenResources(res); return -1; }
	RROutput out = res->outputs[0];
	XRROutputInfo *oi = XRRGetOutputInfo(d, res, out);
	RRCrtc crtc = (oi && oi->crtc) ? oi->crtc : res->crtcs[0];
	if (oi) XRRFreeOutputInfo(oi);
	RRMode mode = None;
	for (int i = 0; i < res->nmode; i++) {
		if ((int)res->modes[i].width == w && (int)res->modes[i].height == h) { mode = res->modes[i].id; break; }
	}
	metal_randr_catch(d);
	*created = 0;
	if (mode == None) {
		char name[32];
		snprintf(name, sizeof name, "%dx%d", w, h);
		XRRModeInfo mi;
		memset(&mi, 0, sizeof mi);
		mi.width = w; mi.height = h; mi.hTotal = w; mi.vTotal = h;
		mi.dotClock = (unsigned long)w * h * 60;
		mi.name = name; mi.nameLength = strlen(name);
		mode = XRRCreateMode(d, root, &mi);
		XRRAddOutputMode(d, out, mode);
		*created = 1;
	}
	// What to go back to if the change fails half way (the output off).
	XRRCrtcInfo *was = XRRGetCrtcInfo(d, res, crtc);
	XWindowAttributes wa;
	XGetWindowAttributes(d, root, &wa);
	XGrabServer(d);
	XRRSetCrtcConfig(d, res, crtc, CurrentTime, 0, 0, None, RR_Rotate_0, NULL, 0);
	// 96 dpi, as Xvfb reports.
	XRRSetScreenSize(d, root, w, h, w * 254 / 960, h * 254 / 960);
	XRRSetCrtcConfig(d, res, crtc, CurrentTime, 0, 0, mode, RR_Rotate_0, &out, 1);
	XSync(d, False);
	int err = metal_randr_error;
	if (err && was && was->mode != None) {
		XRRSetScreenSize(d, root, wa.width, wa.height, wa.width * 254 / 960, wa.height * 254 / 960);
		XRRSetCrtcConfig(d, res, crtc, CurrentTime, was->x, was->y, was->mode, was->rotation, was->outputs, was->noutput);
	}
	XUngrabServer(d);
	XSync(d, False);
	if (was) XRRFreeCrtcInfo(was);
	metal_randr_release();
	XRRFreeScreenResources(res);
	*mode_out = mode;
	return err;
}

// metal_randr_forget removes a mode this connection created.
static void metal_randr_forget(Display *d, unsigned long mode) {
	Window root = DefaultRootWindow(d);
	XRRScreenResources *res = XRRGetScreenResources(d, root);
	metal_randr_catch(d);
	if (res && res->noutput > 0) XRRDeleteOutputMode(d, res->outputs[0], mode);
	XRRDestroyMode(d, mode);
	XSync(d, False);
	metal_randr_release();
	if (res) XRRFreeScreenResources(res);
}

static int metal_has_randr(Display *d) {
	int ev, err, major = 0, minor = 0;
	if (!XRRQueryExtension(d, &ev, &err)) return 0;
	XRRQueryVersion(d, &major, &minor);
	return major > 1 || (major == 1 && minor >= 2);
}

static void metal_root_size(Display *d, int *w, int *h) {
	XWindowAttributes wa;
	XGetWindowAttributes(d, DefaultRootWindow(d), &wa);
	*w = wa.width; *h = wa.height;
}
*/
import "C"

import (
	"fmt"
	"sync"
)

// randrMu keeps resizes one at a time in the process: Xlib's error
// handler, which a resize sets for its duration, is the process's.
var randrMu sync.Mutex

// Resize sets the X screen to w x h through RandR (1.2 or later): what a
// desktop sees as a monitor changing mode, so windows maximised to it
// follow. The size must lie within the server's range (Xvfb's largest is
// the one it started with). Capture of the screen must be stopped around
// it: a capture sized for the old screen reads outside the new one. On an
// error the display's size is whatever the screen is now (Size).
func (x *Display) Resize(w, h int) error {
	randrMu.Lock()
	defer randrMu.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.d == nil {
		return ErrClosed
	}
	if C.metal_has_randr(x.d) == 0 {
		return fmt.Errorf("X display has no RandR 1.2")
	}
	var mode C.ulong
	var created C.int
	rc := C.metal_randr_size(x.d, C.int(w), C.int(h), &mode, &created)
	var rw, rh C.int
	C.metal_root_size(x.d, &rw, &rh)
	x.w, x.h = int(rw), int(rh)
	if rc != 0 || x.w != w || x.h != h {
		if created != 0 {
			C.metal_randr_forget(x.d, mode) // refused by the server where the screen uses it
		}
		if rc != 0 {
			return fmt.Errorf("RandR resize to %dx%d: X error %d; the screen is %dx%d", w, h, int(rc), x.w, x.h)
		}
		return fmt.Errorf("RandR resize to %dx%d: the screen is %dx%d", w, h, x.w, x.h)
	}
	// The mode replaced is destroyed when this connection made it; the
	// server's own (the start size) stays.
	if x.mode != 0 && x.mode != mode {
		C.metal_randr_forget(x.d, x.mode)
		x.mode = 0
	}
	if created != 0 {
		x.mode = mode
	}
	return nil
}
