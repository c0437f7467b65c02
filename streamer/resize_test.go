package streamer

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/x11"
)

func TestFitSize(t *testing.T) {
	for _, tt := range []struct{ w, h, ww, wh int }{
		{1280, 720, 1280, 720},
		{1000, 600, 1000, 600},
		{999, 599, 998, 598},    // even
		{1600, 1000, 1152, 720}, // scaled to fit, the shape kept
		{2560, 1440, 1280, 720},
		{3000, 500, 1280, 240}, // scaled, then the least height
		{100, 50, 320, 240},    // the least size
		{16384, 16384, 720, 720},
	} {
		if w, h := fitSize(tt.w, tt.h, 1280, 720); w != tt.ww || h != tt.wh {
			t.Errorf("fitSize(%d, %d) = %dx%d, want %dx%d", tt.w, tt.h, w, h, tt.ww, tt.wh)
		}
	}
}

// TestBrowserScreenFollowsTheWindow: the owner's window size becomes the X
// screen's (RandR) and the decoded video's, within the bounds, on the same
// peer connection with frames going on; a spectator may not ask; with
// -fixed-resolution the screen keeps its size and a request is refused.
func TestBrowserScreenFollowsTheWindow(t *testing.T) {
	browser := browsertest.New(t)
	r := startStreamer(t, func(c *Config) { c.Demo, c.Audio, c.Encoder = false, false, EncoderX264 })
	xd := openX(t, r.Display())
	tab := ownerTab(t, browser, r)
	if err := browsertest.WaitTrue(tab, `metal.screen && metal.screen.resizable && metal.screen.width === 1280`, 10*time.Second); err != nil {
		t.Fatalf("the owner was not told it may resize the screen: %v", err)
	}
	// Marks this peer connection: a reconnect would make a new one.
	if _, err := browsertest.Eval[any](tab, `metal.state.pc.marked = true, 0`); err != nil {
		t.Fatal(err)
	}
	keyFrames := `(async () => { let n = 0; (await metal.state.pc.getStats()).forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") n = s.keyFramesDecoded || 0; }); return n; })()`
	for _, step := range []struct {
		vw, vh int // the window
		w, h   int // the screen
	}{
		{1000, 600, 1000, 600},
		{999, 599, 998, 598},
		{1600, 1000, 1152, 720}, // at most the configured 1280x720, its shape kept
		{1280, 720, 1280, 720},
	} {
		keys, err := browsertest.Eval[int](tab, keyFrames)
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(tab, chromedp.EmulateViewport(int64(step.vw), int64(step.vh))); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if w, h := rootSize(t, r.Display()); w == step.w && h == step.h {
				break
			}
			if time.Now().After(deadline) {
				w, h := rootSize(t, r.Display())
				t.Fatalf("window %dx%d: the X screen is %dx%d, want %dx%d", step.vw, step.vh, w, h, step.w, step.h)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The decoded video has the new size on the same connection, a key
		// frame started it, and frames go on.
		expr := fmt.Sprintf(`document.getElementById("video").videoWidth === %d && document.getElementById("video").videoHeight === %d && metal.state.pc.marked && metal.screen.width === %d`, step.w, step.h, step.w)
		if err := browsertest.WaitTrue(tab, expr, 10*time.Second); err != nil {
			t.Fatalf("window %dx%d: decoded video: %v", step.vw, step.vh, err)
		}
		if after, _ := browsertest.Eval[int](tab, keyFrames); after <= keys {
			t.Errorf("window %dx%d: no key frame decoded after the resize (%d before, %d after)", step.vw, step.vh, keys, after)
		}
		frames, _ := browsertest.Eval[int](tab, `metal.stats.framesDecoded`)
		if err := browsertest.WaitTrue(tab, fmt.Sprintf(`metal.stats.framesDecoded > %d + 20 && metal.stats.width === %d`, frames, step.w), 10*time.Second); err != nil {
			t.Fatalf("window %dx%d: frames stopped after the resize: %v", step.vw, step.vh, err)
		}
		if n := r.peerCount(); n != 1 {
			t.Fatalf("window %dx%d: %d peers, want the one", step.vw, step.vh, n)
		}
	}
	// Input maps onto the new screen: the middle of the window is the
	// middle of the screen.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1000, 600)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "a 1000x600 screen", func() bool { w, h := rootSize(t, r.Display()); return w == 1000 && h == 600 })
	if err := browsertest.WaitTrue(tab, `document.getElementById("video").videoWidth === 1000`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 500, 300)); err != nil {
		t.Fatal(err)
	}
	waitX(t, "pointer at (500,300)", func() bool { x, y := xd.Pointer(); return abs(x-500) <= 2 && abs(y-300) <= 2 })

	// A spectator is told the size but may not ask for another.
	viewer := browsertest.Tab(t, browser)
	if err := chromedp.Do(viewer, chromedp.EmulateViewport(800, 500), chromedp.Navigate(r.playerURL(t, token.RoleViewer))); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(viewer, `metal.screen && metal.screen.width === 1000 && !metal.screen.resizable`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](viewer, `metal.send({type: "resize", width: 640, height: 480}), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(viewer, `(metal.lastInputError || "").includes("view-only")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(resizeGap + 200*time.Millisecond)
	if w, h := rootSize(t, r.Display()); w != 1000 || h != 600 {
		t.Fatalf("a spectator resized the screen to %dx%d", w, h)
	}

	// Fixed resolution: the old behaviour.
	fixed := startStreamer(t, func(c *Config) { c.Demo, c.Audio, c.Encoder, c.FixedResolution = false, false, EncoderX264, true })
	ftab := ownerTab(t, browser, fixed)
	if err := browsertest.WaitTrue(ftab, `metal.screen && metal.screen.owner && !metal.screen.resizable && metal.screen.width === 1280`, 10*time.Second); err != nil {
		t.Fatalf("with -fixed-resolution: %v", err)
	}
	if err := chromedp.Do(ftab, chromedp.EmulateViewport(900, 600)); err != nil {
		t.Fatal(err)
	}
	if _, err := browsertest.Eval[any](ftab, `metal.send({type: "resize", width: 900, height: 600}), 0`); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.WaitTrue(ftab, `(metal.lastInputError || "").includes("fixed resolution")`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(resizeGap + 200*time.Millisecond)
	if w, h := rootSize(t, fixed.Display()); w != 1280 || h != 720 {
		t.Fatalf("with -fixed-resolution the screen became %dx%d", w, h)
	}
	if err := browsertest.WaitTrue(ftab, `document.getElementById("video").videoWidth === 1280`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// rootSize is the X screen's size as a new client sees it.
func rootSize(t *testing.T, display string) (int, int) {
	t.Helper()
	xd, err := x11.Open(display)
	if err != nil {
		t.Fatal(err)
	}
	defer xd.Close()
	return xd.Size()
}

// peerCount is the number of connected peers.
func (r *running) peerCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.peers)
}
