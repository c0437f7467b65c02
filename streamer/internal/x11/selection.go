package x11

/*
#cgo pkg-config: x11 xfixes
#include <X11/Xlib.h>
#include <X11/Xatom.h>
#include <X11/extensions/Xfixes.h>

static void metal_watch_selections(Display *d) {
	Window root = DefaultRootWindow(d);
	XFixesSelectSelectionInput(d, root, XA_PRIMARY, XFixesSetSelectionOwnerNotifyMask);
	XFixesSelectSelectionInput(d, root, XInternAtom(d, "CLIPBOARD", False), XFixesSetSelectionOwnerNotifyMask);
	XFlush(d);
}

// metal_selection_changed drains the queued events and reports which
// selections got a new owner: bit 0 PRIMARY, bit 1 CLIPBOARD.
static int metal_selection_changed(Display *d, int base) {
	int changed = 0;
	Atom clipboard = XInternAtom(d, "CLIPBOARD", False);
	XEvent ev;
	while (XPending(d) > 0) {
		XNextEvent(d, &ev);
		if (ev.type == base + XFixesSelectionNotify) {
			XFixesSelectionNotifyEvent *s = (XFixesSelectionNotifyEvent *)&ev;
			if (s->selection == XA_PRIMARY) changed |= 1;
			if (s->selection == clipboard) changed |= 2;
		}
	}
	return changed;
}
*/
import "C"

import (
	"context"
	"time"
)

// selectionPoll is how often queued selection events are read.
const selectionPoll = 50 * time.Millisecond

// WatchSelections calls onChange with "primary" or "clipboard" each time
// an X client takes that selection (a copy, or a text selection for
// PRIMARY), until ctx ends. It uses its own connection, opened before it
// returns: an error means the display has no XFIXES.
func WatchSelections(ctx context.Context, name string, onChange func(selection string)) (wait func(), err error) {
	d, base, err := openXFixes(name)
	if err != nil {
		return nil, err
	}
	C.metal_watch_selections(d)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer C.XCloseDisplay(d)
		t := time.NewTicker(selectionPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				changed := C.metal_selection_changed(d, base)
				if changed&1 != 0 {
					onChange("primary")
				}
				if changed&2 != 0 {
					onChange("clipboard")
				}
			}
		}
	}()
	return func() { <-done }, nil
}
