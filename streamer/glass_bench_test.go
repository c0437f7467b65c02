package streamer

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

// glass is the player's screen for glass-to-glass: an Xvfb of its own on
// which a Chromium with a window (not headless) shows the player page full
// screen. Reading a stamp back from this screen's pixels, in this process,
// times the whole path a player sees (capture, encode, send, receive,
// decode, compositing and the browser's paint) against the same clock that
// timed its drawing, with no browser-reported timestamp in between. What it
// leaves out is a physical monitor's scan-out.
type glass struct {
	disp    *x11.Display
	browser context.Context
	w, h    int
}

// glassPoll is how often the glass is read: a stamp is seen at most this
// late (half of it on average).
const glassPoll = time.Millisecond

func startGlass(tb testing.TB, w, h int) *glass {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	xv, err := startXvfb(ctx, w, h)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); xv.stop() })
	d, err := x11.Open(xv.display)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Close)
	return &glass{disp: d, browser: browsertest.NewOnDisplay(tb, xv.display, w, h), w: w, h: h}
}

// locate finds the stamp on the glass near (ex, ey), where the page says
// its viewport's top-left corner is on the screen: the corner within 4 px
// of it from which all sixteen cells read as a stamp whose check holds in
// each of several grabs 60 ms apart (different stamps), and read the same
// 4 px further in (inside the cells, not on an edge). The search stays
// that close because the check cannot tell a read one cell off: shifting
// the 16 cells by one keeps the nibbles' XOR whenever the cell shifted in
// equals the one shifted out.
func (g *glass) locate(ex, ey int, timeout time.Duration) (x0, y0 int, err error) {
	const span = x11.FrameCodeBits * x11.FrameCodeCell
	const grabs, slack = 6, 4
	gx, gy := max(0, ex-slack), max(0, ey-slack)
	gw, gh := min(g.w-gx, span+4+2*slack), min(g.h-gy, x11.FrameCodeCell+4+2*slack)
	deadline := time.Now().Add(timeout)
	for {
		var imgs [][]byte
		for i := range grabs {
			if i > 0 {
				time.Sleep(60 * time.Millisecond)
			}
			img, err := g.disp.Grab(gx, gy, gw, gh)
			if err != nil {
				return 0, 0, err
			}
			imgs = append(imgs, img)
		}
		read := func(img []byte, x, y int) uint16 {
			at := (y+x11.FrameCodeCell/2)*gw + x
			return x11.FrameCodeFromRow(img[at : at+span])
		}
		holds := func(x, y int) bool {
			seen := map[uint16]bool{}
			for _, img := range imgs {
				code := read(img, x, y)
				if _, ok := stampCounter(code); !ok || read(img, x+4, y+4) != code {
					return false
				}
				seen[code] = true
			}
			return len(seen) > 1 // the stamp moves: it is the stream's
		}
		// The middle of the corners that pass, so that reads land as near
		// the cells' centres as the search allows.
		var xs, ys []int
		for y := 0; y+x11.FrameCodeCell+4 <= gh; y++ {
			for x := 0; x+span+4 <= gw; x++ {
				if holds(x, y) {
					xs, ys = append(xs, x), append(ys, y)
				}
			}
		}
		if len(xs) > 0 {
			slices.Sort(xs)
			slices.Sort(ys)
			return gx + xs[len(xs)/2], gy + ys[len(ys)/2], nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("no stamp on the glass within %d px of %d,%d after %s", slack, ex, ey, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// glassReads is what the glass showed: when each stamp first appeared.
type glassReads struct {
	mu       sync.Mutex
	shown    map[uint16]time.Time
	misreads int // a change on the glass whose check failed
	reads    int
	maxGap   time.Duration // the longest time between two reads
	last     time.Time
	err      error // a read failed: the watch stopped
}

// watch reads the stamp at (x0, y0) every glassPoll until ctx ends,
// recording when each stamp first shows.
func (g *glass) watch(ctx context.Context, x0, y0 int) *glassReads {
	r := &glassReads{shown: map[uint16]time.Time{}}
	go func() {
		t := time.NewTicker(glassPoll)
		defer t.Stop()
		var last uint16
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			code, err := g.disp.ReadFrameCode(x0, y0)
			now := time.Now()
			r.mu.Lock()
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			r.reads++
			if !r.last.IsZero() {
				r.maxGap = max(r.maxGap, now.Sub(r.last))
			}
			r.last = now
			if code != last {
				last = code
				if n, ok := stampCounter(code); !ok {
					r.misreads++
				} else if _, seen := r.shown[n]; !seen {
					r.shown[n] = now
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// reset forgets what was read so far (the warm-up).
func (r *glassReads) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shown, r.misreads, r.reads, r.maxGap, r.last = map[uint16]time.Time{}, 0, 0, 0, time.Time{}
}

// pageClockOffset is how far the page's clock (performance.timeOrigin +
// performance.now()) runs ahead of this process's wall clock, in ms: the
// best of 25 reads, the one with the shortest round trip, which bounds the
// error to half of it (also returned).
func pageClockOffset(tab context.Context) (offset, halfRTT float64, err error) {
	best := math.Inf(1)
	for range 25 {
		t0 := time.Now()
		page, err := browsertest.Eval[float64](tab, `performance.timeOrigin + performance.now()`)
		t1 := time.Now()
		if err != nil {
			return 0, 0, err
		}
		rtt := float64(t1.Sub(t0).Microseconds()) / 1000
		if rtt < best {
			best = rtt
			mid := float64(t0.UnixMicro()+t1.UnixMicro()) / 2000
			offset = page - mid
		}
	}
	return offset, best / 2, nil
}
