package gst

import (
	"fmt"

	"github.com/go-gst/go-gst/gst"
)

// Properties reports which of names the element has, creating one
// instance (which opens nothing: devices open on the way to READY).
func Properties(element string, names []string) (map[string]bool, error) {
	Init()
	el, err := gst.NewElement(element)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", element, err)
	}
	has := make(map[string]bool, len(names))
	for _, n := range names {
		if _, err := el.GetPropertyType(n); err == nil {
			has[n] = true
		}
	}
	return has, nil
}

// CheckPads validates caps on either side of an element against the pad
// templates it registered (for the NVIDIA encoders, what the plugin read
// from the GPU): sinkCaps must be something its sink pad can take and
// srcCaps something its source pad can give.
func CheckPads(element, sinkCaps, srcCaps string) error {
	Init()
	f := gst.Find(element)
	if f == nil {
		return fmt.Errorf("%s is not registered", element)
	}
	for _, side := range []struct {
		name, caps string
		ok         func(*gst.Caps) bool
	}{
		{"sink", sinkCaps, f.CanSinkAnyCaps},
		{"src", srcCaps, f.CanSourceAnyCaps},
	} {
		if side.caps == "" {
			continue
		}
		c := gst.NewCapsFromString(side.caps)
		if c == nil {
			return fmt.Errorf("%s: caps %q do not parse", element, side.caps)
		}
		if !side.ok(c) {
			return fmt.Errorf("%s's %s pad template does not allow %s", element, side.name, side.caps)
		}
	}
	return nil
}

// CanIntersect reports whether two caps strings have anything in common.
func CanIntersect(a, b string) (bool, error) {
	Init()
	ca, cb := gst.NewCapsFromString(a), gst.NewCapsFromString(b)
	if ca == nil || cb == nil {
		return false, fmt.Errorf("caps %q or %q do not parse", a, b)
	}
	return ca.CanIntersect(cb), nil
}
